"""Model families for ablation studies: plain ``nn.Module``s whose toggles are keyword arguments."""

from ablate.models.charrnn import CharRNN
from ablate.models.convnet import ConvNet
from ablate.models.layers import get_global_pool, get_norm_layer, get_rnn_cell

__all__ = ["CharRNN", "ConvNet", "get_global_pool", "get_norm_layer", "get_rnn_cell"]
