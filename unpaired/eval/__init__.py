"""Evaluation on fixed held-out sets: classifiers, translation/DA accuracy, FID/KID, model selection."""
