"""Ours against torchvision's and timm's MobileNetV3 in the same run: the worker that runs the peers under their own
environment (:mod:`.worker`), what each side prepares (:mod:`.prepare`) and the comparison (:mod:`.compare`).
Nothing is imported here, so that the worker stays light (see :mod:`.worker`)."""
