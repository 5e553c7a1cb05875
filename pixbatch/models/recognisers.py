"""Published checkpoint layouts that pixbatch builds with its own architectures, in the one order they
are tried: the first that recognises a file's keys and shapes builds it; spandrel is tried after all
of them (models/checkpoint.py). Each family module defines its recogniser; this list is the only
place that orders them (the order the family imports gave before: SR families alphabetically, then
the style nets), so it never depends on which module was imported first. A new recogniser goes
before any whose layout it could also match."""

from __future__ import annotations

from pixbatch.models._registry import Recogniser
from pixbatch.models.sr import bsrn, carn, imdn, rlfn, safmn, smfan, span
from pixbatch.models.style import engstrom, johnson, mobilenet

RECOGNISERS: tuple[tuple[str, Recogniser], ...] = (
    ("BSRN", bsrn.recognise),
    ("CARN-M", carn.recognise),
    ("IMDN", imdn.recognise),
    ("RLFN", rlfn.recognise),
    ("SAFMN", safmn.recognise),
    ("SMFAN", smfan.recognise),
    ("SPAN", span.recognise),
    ("fast-style-transfer (Engstrom, TensorFlow variables)", engstrom.recognise_engstrom),
    ("TransformerNet (PyTorch fast_neural_style)", johnson.recognise_johnson),
    ("TransformerMobileNet (pytorch-fast-neural-style-mobilenetV2)", mobilenet.recognise_mobilenet),
)
