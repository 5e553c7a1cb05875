"""The job spec: what a command asked for, typed, built once from its flags and passed unchanged to
the engine, the Ray executor, eval and bench (docs/ARCHITECTURE.md). Torch-free, so the command line
builds it, and ``--help`` reads its vocabularies, before torch loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pixbatch.io.decode import DEFAULT_MAX_PIXELS
from pixbatch.io.encode import EncodeOptions
from pixbatch.io.video_encoding import VideoEncoding
from pixbatch.runtime.windows import Windowing

MIN_TILE, MAX_TILE = 16, 32768  # --tile's range (0 = automatic); the engine never cuts below MIN_TILE


class Choice(str, Enum):
    """A word of an option's vocabulary; equal to its string, printed as it."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def words(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


class Precision(Choice):
    """--precision: auto picks bf16/fp16 where device and model support it (runtime/device.py); int8 is
    opt-in, on the CPU through OpenVINO (runtime/int8.py)."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"


class BackendChoice(Choice):
    """--backend: what computes on the CPU; one factory turns it into a Backend (runtime/backends.py)."""

    AUTO = "auto"
    TORCH = "torch"
    OPENVINO = "openvino"
    ONNXRUNTIME = "onnxruntime"  # ONNX files only


class KernelChoice(Choice):
    """--kernels: the fused Triton conv+PixelShuffle kernels, or torch's ops."""

    AUTO = "auto"
    TRITON = "triton"
    TORCH = "torch"


@dataclass(frozen=True)
class ModelSpec:
    """Which model: a built-in name or a checkpoint path (None: the task's default), the scale asked
    for (None: the model's), and the task it must be a model of ("sr", "seg" or "style")."""

    name: str | None = None
    scale: int | None = None
    task: str = "sr"
    onnx: dict | None = None  # what an ONNX file without metadata cannot say: input_order, value_range, mean, std
    denoise: float | None = None  # a real-photo model's place between its endpoints (None: its default)


@dataclass(frozen=True)
class ComputeSpec:
    """Where and how the model computes; the defaults are the image commands' (eval states its own)."""

    device: str = "auto"  # auto, cpu, cuda or cuda:N
    precision: Precision = Precision.AUTO
    compile: bool | None = None  # None: on a GPU for large jobs (runtime/device.py)
    channels_last: bool = True
    backend: BackendChoice = BackendChoice.AUTO
    kernels: KernelChoice = KernelChoice.AUTO
    calibrate_on_input: bool = False  # int8: calibrate on the job's own first images (``calibrate_on``)
    calibrate_on: tuple[str, ...] = ()  # those images' paths, filled in once the job is planned

    def __post_init__(self) -> None:  # words from the command line become members (or ValueError)
        object.__setattr__(self, "precision", Precision(self.precision))
        object.__setattr__(self, "backend", BackendChoice(self.backend))
        object.__setattr__(self, "kernels", KernelChoice(self.kernels))


@dataclass(frozen=True)
class JobSpec:
    """One job: the model, its compute, the windows, the outputs and the host's workers."""

    model: ModelSpec = field(default_factory=ModelSpec)
    compute: ComputeSpec = field(default_factory=ComputeSpec)
    windowing: Windowing = field(default_factory=Windowing)
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    video: VideoEncoding = field(default_factory=VideoEncoding)  # how video outputs are encoded
    workers: int | None = None  # decode processes; None = automatic
    writers: int | None = None  # encode threads; None = automatic
    max_pixels: int = DEFAULT_MAX_PIXELS


class NoDefaultModelError(ValueError):
    """A scale no built-in model upscales by, and no --model given."""


@dataclass(frozen=True)
class TaskDefaults:
    tile: int  # core edge in input px; 0 = from the memory budget
    overlap: int | None  # context px on each side; None = the model's receptive field
    overlap_shown: str  # how --help states the overlap default
    mirror_borders: bool  # mirror the context beyond the true borders (the overlap-tile strategy)
    models: dict[int, str] = field(default_factory=dict)  # the built-in model per scale (1 = the only one)
    scale: int = 1  # the scale when neither --scale nor --model says

    def windowing(self, tile: int | None = None, overlap: int | None = None, batch_size: int = 0, *,
                  blend: bool = False, whole_pixels: int = 0) -> Windowing:
        """The task's windows, the arguments that are None taking the task's defaults."""
        return Windowing(tile=self.tile if tile is None else tile,
                         overlap=self.overlap if overlap is None else overlap, blend=blend,
                         mirror_borders=self.mirror_borders, batch_size=batch_size, whole_pixels=whole_pixels)

    def model_for(self, scale: int | None) -> str:
        """The built-in model used without --model, for ``scale`` (None: the task's default scale)."""
        scale = self.scale if scale is None else scale
        if scale not in self.models:
            raise NoDefaultModelError(f"no built-in model for scale {scale}; built-in scales are "
                                      f"{', '.join(map(str, sorted(self.models)))} (or pass --model)")
        return self.models[scale]
