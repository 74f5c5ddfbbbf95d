"""ImageNet-DG: a few-shot domain-generalisation benchmark built from ImageNet and its variants."""

__version__ = "0.1.0"
