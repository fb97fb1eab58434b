"""hubertlab: pretrain, evaluate and fine-tune HuBERT-style speech models on your own audio."""

__version__ = "0.1.0"
