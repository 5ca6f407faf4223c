"""Test helper run under ``torchrun``: ``python -m training.sft_then_grpo`` with per-rank instrumentation.

Each rank writes ``OUT/counts-<stage>-rank<R>.json``: the media items its encoders saw and the prompts
(or samples) it prepared. With ``AVRT_TEST_KILL_AT=N`` the job dies (SIGKILL of rank 0, after every rank
finished writing the checkpoint of step N of the first stage), as a killed run would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch.distributed as dist
from transformers import Trainer

import training.grpo as grpo
import training.sft as sft
from training.encoders import count_encodings
from training.sft_then_grpo import main

RANK = int(os.environ.get("RANK", "0"))
KILL_AT = int(os.environ.get("AVRT_TEST_KILL_AT", "0"))
OUT = Path(os.environ["AVRT_TEST_OUT"])


def counted_train(stage: str, train):
    def run(self, *args, **kwargs):
        prepared: list[int] = []
        if stage == "grpo":
            prepare = self._prepare_media
            self._prepare_media = lambda inputs: prepared.append(len({r["id"] for r in inputs})) or prepare(inputs)
        else:
            collate = self.data_collator
            self.data_collator = lambda rows: prepared.append(len(rows)) or collate(rows)
        with count_encodings(self.model) as counts:
            result = train(self, *args, **kwargs)
        record = {"visual": counts["visual"], "audio": counts["audio"], "prepared": sum(prepared),
                  "outputs_requiring_grad": counts["outputs_requiring_grad"], "steps": self.state.global_step}
        (OUT / f"counts-{stage}-rank{RANK}.json").write_text(json.dumps(record))
        return result
    return run


sft.AVSFTTrainer.train = counted_train("sft", sft.AVSFTTrainer.train)
grpo.AVGRPOTrainer.train = counted_train("grpo", grpo.AVGRPOTrainer.train)

if KILL_AT:
    save = Trainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if self.state.global_step == KILL_AT:
            dist.barrier()
            if RANK == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    Trainer._save_checkpoint = save_then_die

if __name__ == "__main__":
    main(sys.argv[1:])
