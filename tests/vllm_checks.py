"""Checks run by vLLM's own Python (``.venv-vllm``), not the project's: ``python tests/vllm_checks.py IN.json``.

It imports nothing from this project (vLLM's environment does not have it). ``IN.json`` holds

* ``serve``: ``{name: [flag, ...]}``, the flags of a ``vllm serve`` command after the weights: each
  is parsed by vLLM's own server argument parser and checked with its own validation;
* ``requests``: ``{name: body}``, chat completion bodies validated by vLLM's ``ChatCompletionRequest``;
* ``architectures``: names that must be in vLLM's model registry;
* ``exports``: ``{name: safetensors file}``, weights whose names the registered implementation's
  ``hf_to_vllm_mapper`` must keep (``{"file": ..., "module": ..., "cls": ...}``);
* ``weight_transfer``: ``{name: {"backend": "nccl" | "ipc", "init": init_info, "update": update_info}}``,
  the bodies of the weight-transfer routes, parsed by that engine's own ``parse_init_info`` and
  ``parse_update_info``.

It prints one JSON object: per item, what vLLM made of it (or the error it raised).
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def _serve_parser():
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    for module in ("vllm.entrypoints.openai.cli_args", "vllm.entrypoints.launchers.cli_args"):  # moved in 0.3x
        try:
            cli = importlib.import_module(module)
            break
        except ImportError:
            continue
    else:
        raise ImportError("vLLM's serve argument parser (cli_args.make_arg_parser) was not found")
    return cli.make_arg_parser(FlexibleArgumentParser()), cli.validate_parsed_serve_args


def _protocol():
    for module in ("vllm.entrypoints.openai.chat_completion.protocol", "vllm.entrypoints.openai.protocol"):
        try:
            return importlib.import_module(module).ChatCompletionRequest
        except (ImportError, AttributeError):
            continue
    raise ImportError("vLLM's ChatCompletionRequest was not found")


def _weight_transfer_engine(backend: str):
    if backend == "ipc":
        from vllm.distributed.weight_transfer.ipc_engine import IPCWeightTransferEngine

        return IPCWeightTransferEngine
    from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferEngine

    return NCCLWeightTransferEngine


def check(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"serve": {}, "requests": {}, "architectures": {}, "exports": {}}
    parser, validate = _serve_parser()
    for name, flags in spec.get("serve", {}).items():
        try:
            args = parser.parse_args(flags)
            validate(args)
            out["serve"][name] = {"ok": True, "model": args.model, "max_model_len": args.max_model_len,
                                  "limit_mm_per_prompt": args.limit_mm_per_prompt,
                                  "trust_remote_code": args.trust_remote_code,
                                  "tensor_parallel_size": args.tensor_parallel_size,
                                  "max_num_batched_tokens": args.max_num_batched_tokens,
                                  "generation_config": args.generation_config,
                                  "override_generation_config": args.override_generation_config,
                                  "served_model_name": args.served_model_name,
                                  "weight_transfer_backend": getattr(args.weight_transfer_config, "backend", None)}
        except BaseException as error:  # argparse exits with SystemExit
            out["serve"][name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    request_class = _protocol()
    for name, body in spec.get("requests", {}).items():
        try:
            request = request_class.model_validate(body)
            parts = request.messages[-1]["content"]
            out["requests"][name] = {"ok": True, "temperature": request.temperature, "top_p": request.top_p,
                                     "top_k": request.top_k, "max_tokens": request.max_tokens,
                                     "presence_penalty": request.presence_penalty,
                                     "repetition_penalty": request.repetition_penalty,
                                     "parts": [p["type"] for p in parts] if isinstance(parts, list) else ["text"]}
        except Exception as error:
            out["requests"][name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    if spec.get("architectures"):
        from vllm.model_executor.models.registry import ModelRegistry

        supported = set(ModelRegistry.get_supported_archs())
        out["architectures"] = {name: name in supported for name in spec["architectures"]}
    for name, export in spec.get("exports", {}).items():
        from safetensors import safe_open

        mapper = getattr(importlib.import_module(export["module"]), export["cls"]).hf_to_vllm_mapper
        with safe_open(export["file"], "pt") as weights:
            mapped = {key: mapper._map_name(key) for key in weights.keys()}
        out["exports"][name] = {"dropped": sorted(k for k, v in mapped.items() if v is None),
                                "prefixes": sorted({v.split(".")[0] for v in mapped.values() if v})}
    if spec.get("weight_transfer"):
        out["weight_transfer"] = {}
        for name, bodies in spec["weight_transfer"].items():
            try:
                engine_class = _weight_transfer_engine(bodies["backend"])
                engine = engine_class.__new__(engine_class)  # the parsers need no set-up
                init = engine.parse_init_info(bodies["init"])
                update = engine.parse_update_info(bodies["update"])
                out["weight_transfer"][name] = {
                    "ok": True, "packed": init.packed, "names": update.names, "dtype_names": update.dtype_names,
                    "shapes": update.shapes, "world_size": getattr(init, "world_size", None),
                    "rank_offset": getattr(init, "rank_offset", None),
                    "unique_id_bytes": len(getattr(init, "nccl_unique_id_bytes", None) or b""),
                    "handles": len(getattr(update, "ipc_handles", None) or [])}
            except Exception as error:
                out["weight_transfer"][name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        print(json.dumps(check(json.load(handle))))
