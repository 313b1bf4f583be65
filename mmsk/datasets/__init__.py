from .mnist5k import MNIST5k

__all__ = ['MNIST5k']
