"""Config validation split: generic checks for every method, the method's own checks through the registry."""

import ml_collections
import pytest

from configs import cyclegan as cyclegan_config
from unpaired import config_validation, methods
from unpaired.data.spec import DataSpec
from unpaired.methods.cyclegan import CycleGAN


class KeylessMethod:
    """A method whose config has none of CycleGAN's keys (as UNIT/UFDN/DTN configs won't)."""

    checked = []

    @classmethod
    def data_spec(cls, config):
        return DataSpec(domains=("A", "B"), channels={"A": 1, "B": 1})

    @classmethod
    def validate_config(cls, config):
        cls.checked.append(config.method)
        if config.width < 1:
            raise config_validation.ConfigError(f"config.width={config.width} must be >= 1")


@pytest.fixture
def keyless(monkeypatch):
    monkeypatch.setitem(methods._REGISTRY, "keyless", (__name__, "KeylessMethod"))
    digits = cyclegan_config.get_config("digits")
    config = ml_collections.ConfigDict({key: digits[key] for key in config_validation.GENERIC_KEYS})
    config.method = "keyless"
    config.width = 4
    KeylessMethod.checked.clear()
    return config


def test_a_method_without_cyclegan_keys_validates_and_checks_its_own(keyless):
    assert "netG" not in keyless and "lambda_A" not in keyless
    config_validation.validate(keyless)
    assert KeylessMethod.checked == ["keyless"]
    keyless.width = 0
    with pytest.raises(config_validation.ConfigError, match=r"config\.width=0"):
        config_validation.validate(keyless)


@pytest.mark.parametrize("key,value,message", [
    ("method", "unit2", r"unknown config\.method 'unit2'"),
    ("seed", None, r"config\.seed=None must be an integer"),
    ("dtype", "float16", r"config\.dtype='float16' is not one of"),
    ("log_every", 0, r"config\.log_every=0 must be >= 1"),
    ("epoch_count", 9, r"config\.epoch_count=9 is past the last epoch"),
])
def test_generic_checks_name_the_key(keyless, key, value, message):
    keyless[key] = value
    with pytest.raises(config_validation.ConfigError, match=message):
        config_validation.validate(keyless)
    assert KeylessMethod.checked == []  # generic checks come first


def test_batch_size_must_split_over_devices(keyless):
    keyless.batch_size = 6
    with pytest.raises(config_validation.ConfigError, match=r"batch_size=6 must be a multiple of the 4"):
        config_validation.validate(keyless, num_devices=4)


def test_a_missing_generic_key_is_named(keyless):
    del keyless["checkpoint_every"]
    with pytest.raises(config_validation.ConfigError, match=r"config\.checkpoint_every is missing"):
        config_validation.validate(keyless)


@pytest.mark.parametrize("key,value,message", [
    ("init_type", "he", r"config\.init_type='he' is not one of normal, xavier, kaiming, orthogonal"),
    ("lr_policy", "exponential", r"config\.lr_policy='exponential' is not one of"),
    ("netG", "unet_128", r"config\.data\.crop_size=32 must be a multiple of 128 for config\.netG='unet_128'"),
])
def test_cyclegan_checks_live_on_the_method(key, value, message):
    config = cyclegan_config.get_config("digits")
    config[key] = value
    with pytest.raises(config_validation.ConfigError, match=message):
        CycleGAN.validate_config(config)
    with pytest.raises(config_validation.ConfigError, match=message):
        config_validation.validate(config)


def test_cyclegan_names_its_missing_keys():
    config = cyclegan_config.get_config("digits")
    del config["netD"]
    with pytest.raises(config_validation.ConfigError, match=r"config\.netD is missing"):
        config_validation.validate(config)


def test_plateau_and_every_init_type_validate():
    for init_type in ("normal", "xavier", "kaiming", "orthogonal"):
        config = cyclegan_config.get_config("digits")
        config.init_type, config.lr_policy = init_type, "plateau"
        config_validation.validate(config)
