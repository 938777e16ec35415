from .classifier import ClassifierModule as ClassifierModule
from .components.cnn import CNN as CNN
from .components.mlp import MLP as MLP
