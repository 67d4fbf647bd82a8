"""Model families for ablation studies: plain ``nn.Module``s whose toggles are keyword arguments."""

from ablate.models.charrnn import CharRNN
from ablate.models.convnet import ConvNet
from ablate.models.layers import get_global_pool, get_norm_layer, get_rnn_cell
from ablate.models.mlp import MLP

__all__ = ["CharRNN", "ConvNet", "MLP", "get_global_pool", "get_norm_layer", "get_rnn_cell"]
