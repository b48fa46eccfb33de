"""Stage `caption_lm`: the LLM that writes the synthetic captions (the paper's LLM).

The profile makes it: the shapes world trains a small GPT-2 on its text corpus, formatted as concept
prompt -> caption so that it follows prompts as an instruction-tuned LLM does; the coco profile loads a
pretrained LLM. Either way the stage saves one snapshot (model + tokenizer, `save_pretrained`) that the
captions stage, DVC and MLflow version.
"""

from __future__ import annotations

import logging

from synth2 import paths, tracking
from synth2.io import write_curve, write_json
from synth2.models.caption_lm import save_caption_lm
from synth2.models.training import loss_curve, loss_summary
from synth2.params import Params
from synth2.profiles import load_hooks
from synth2.stage import end_process, stage_main

log = logging.getLogger("synth2")


def run(params: Params) -> None:
    lm = load_hooks(params, "caption_lm").make_caption_lm(params)
    save_caption_lm(lm.model, lm.tokenizer, paths.CAPTION_LM)
    # The declared plot is empty when nothing was trained here (a pretrained LLM).
    write_curve(loss_curve(lm.losses), paths.CAPTION_LM_LOSS)
    write_json(lm.metrics | (loss_summary(lm.losses) if lm.losses else {}), paths.CAPTION_LM_METRICS)
    tracking.log_model(paths.CAPTION_LM, "caption_lm")
    log.info("caption LM saved to %s", paths.CAPTION_LM)


main = stage_main("caption_lm", run, trains=True)

if __name__ == "__main__":
    main()
    end_process()  # without Python's teardown: seconds after torch or GX (synth2.stage)
