"""Fast feed-forward style transfer nets (Johnson et al. 2016 with Ulyanov et al.'s instance norm):
the PyTorch example's TransformerNet, Engstrom's TensorFlow net and a MobileNetV2-bottleneck net."""
