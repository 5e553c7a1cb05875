"""Segmentation architectures: U-Net, SegNet and a ResNet34-encoder U-Net."""
