"""Supervised style classifiers — the reference the unsupervised clusters are judged against.

    from stylecluster.classify import load_classifier_config, train_classifier, load_classifier
    config = load_classifier_config("configs/classifier.yaml", model="fusion")
    result, skipped = train_classifier("images/", "labels.csv", "clf.pt", config)

Names load on first use, so the command line starts without torch.
"""
_EXPORTS = {
    "ClassifierConfig": "config", "load_classifier_config": "config",
    "StyleClassifier": "models", "available_classifiers": "models", "create_classifier": "models", "register_classifier": "models",
    "LabelledImages": "train", "TrainedClassifier": "train", "fit_classifier": "train", "load_classifier": "train", "train_classifier": "train",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
