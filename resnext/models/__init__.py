"""The models wing: build a torchvision ResNet-family network, load weights, and the files that hold them.

build.py makes the network; pretrained.py resolves torchvision weights; checkpoint.py reads and writes
checkpoint files; card.py rebuilds a model (and its eval preprocessing) from a checkpoint's model card.
"""
