"""What every training stage shares: arguments from the recipe, checkpoint resume, progress, curves.

Each stage builds its own trainer (HF Trainer, or a TRL trainer) from ``trainer_kwargs`` and hands
it to ``train_and_save``; so base, pretrain, SFT, reward and DPO all resume the same way, log the
same curves, and write the same kind of model directory.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from finloom.errors import BadInput
from finloom.files import atomic_write_json
from finloom.interrupts import raise_if_interrupted
from finloom.progress import progress_bar
from finloom.llm.checkpointing import checkpoint_every_k_layers
from finloom.llm.quantized import has_quantized_base, merged_into_full_precision, quantization_of
from finloom.recipe import LoraSettings, TrainArgs


def trainer_kwargs(train: TrainArgs, output_dir: Path, seed: int, run_name: str | None = None) -> dict:
    """Keyword arguments for ``TrainingArguments`` (or a TRL config subclassing it); ``run_name`` names the run in
    experiment trackers (``recipe/stage``)."""
    return dict(
        run_name=run_name,
        output_dir=str(output_dir),
        max_steps=train.max_steps,
        learning_rate=train.learning_rate,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        lr_scheduler_type=train.lr_scheduler,
        lr_scheduler_kwargs=({"num_decay_steps": train.decay_steps or max(1, train.max_steps // 10)}
                             if train.lr_scheduler == "warmup_stable_decay" else {}),
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=2,
        logging_steps=train.logging_steps,
        logging_nan_inf_filter=False,  # a NaN loss must show, and stop the stage (StopOnNonFiniteLoss)
        bf16=train.bf16,
        activation_checkpointing=False,  # finloom's own, per k layers: see train_and_save
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # also makes a CPU-only torchrun / accelerate launch use gloo DDP
        ddp_find_unused_parameters=False,
    )


class TrainingDiverged(BadInput):
    """The loss became NaN or infinite: the model is ruined, so the stage stops instead of handing it on."""


class StopOnNonFiniteLoss(TrainerCallback):
    def __init__(self, label: str):
        self.label = label

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, float) and not math.isfinite(value):
                raise TrainingDiverged(f"{self.label}: the training {key.replace('_', ' ')} became {value} by step "
                                       f"{state.global_step}; lower train.learning_rate (or check the data)")


class StopOnInterrupt(TrainerCallback):
    """Stops training at the next step after a Ctrl-C, even one that code inside the step swallowed."""

    def on_step_end(self, args, state, control, **kwargs):
        raise_if_interrupted()


class RichProgress(TrainerCallback):
    """A progress bar with the latest loss, instead of tqdm lines in logs."""

    def __init__(self, label: str):
        self.label = label
        self.progress = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = progress_bar(self.label)
        self.progress.start()
        self.task = self.progress.add_task(self.label, total=state.max_steps, completed=state.global_step, status="")

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and self.progress:
            self.progress.update(self.task, status=f"loss {logs['loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress:
            self.progress.stop()


def with_lora(model, lora: LoraSettings):
    """``model`` with LoRA adapters (PEFT) when ``lora`` is enabled; ``train_and_save`` saves it merged."""
    if not lora.enabled:
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_quantized", False):  # lora.quantize; checkpointing stays train.gradient_checkpointing's
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=lora.target_modules, task_type="CAUSAL_LM"))


def train_and_save(trainer: Trainer, stage_dir: Path, resume: bool, label: str,
                   trackers: tuple[str, ...] | list[str] = ("tensorboard",), train: TrainArgs | None = None) -> dict:
    """Train (resuming from the last checkpoint of an interrupted attempt) and save the model.

    ``train`` (the stage's train settings) turns on gradient checkpointing per k layers as it says. Writes ``STAGE/model`` (HF directory, safetensors) and ``STAGE/log_history.json`` (the curves
    the report plots), sends the curves to ``trackers`` (the recipe's ``report_to``), and returns the
    final metrics, with where the curves went (``curves``).
    """
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StopOnInterrupt())
    trainer.add_callback(StopOnNonFiniteLoss(label))
    if trainer.is_world_process_zero():  # one progress bar and one event file per run, not per process
        trainer.add_callback(RichProgress(label))
        if "tensorboard" in trackers:
            trainer.add_callback(_tensorboard(stage_dir / "tensorboard"))
    others = [name for name in trackers if name != "tensorboard"]
    if others:  # the integrations' own callbacks: each reads its offline mode (WANDB_MODE, MLFLOW_TRACKING_URI ...)
        from transformers.integrations import get_reporting_integration_callbacks

        for callback in get_reporting_integration_callbacks(others):
            trainer.add_callback(callback)
    group = train.checkpoint_group() if train is not None else None
    if group is not None:
        group = checkpoint_every_k_layers(trainer.model, group)
    # Not from a checkpoint at max_steps (a kill between the last checkpoint and the model's save): transformers'
    # Trainer (5.x) trains one step past max_steps from there. The one before it is resumed from, exactly.
    checkpoint = last_complete_checkpoint(Path(trainer.args.output_dir), trainer.args.max_steps) if resume else None
    # ZeRO-3 loads parameters partitioned (numel 0 here); ds_numel is their full size.
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters() if p.requires_grad)
    quantized = quantization_of(trainer.model)  # read before the save merges LoRA adapters away
    started = time.perf_counter()
    try:
        output = trainer.train(resume_from_checkpoint=checkpoint)
    except TrainingDiverged as error:  # keep the steps that led there: what a diagnosis starts from
        if trainer.is_world_process_zero():
            atomic_write_json(stage_dir / "log_history.json", trainer.state.log_history)
        raise TrainingDiverged(f"{error}; the logged steps before it: {stage_dir.name}/log_history.json") from None
    train_seconds = time.perf_counter() - started
    if not math.isfinite(output.training_loss):  # steps after the last logged window
        raise TrainingDiverged(f"{label}: the training loss became {output.training_loss} by step "
                               f"{trainer.state.global_step}; lower train.learning_rate (or check the data)")
    _save_model_dir(trainer, stage_dir / "model")
    history = trainer.state.log_history
    if trainer.is_world_process_zero():
        atomic_write_json(stage_dir / "log_history.json", history)
    losses = [entry["loss"] for entry in history if "loss" in entry]
    metrics = {
        "train_steps": trainer.state.global_step,
        # The Trainer averages a resumed run's loss over the resumed steps only; the log has every step.
        "train_loss": round(output.training_loss if checkpoint is None or not losses else logged_mean_loss(history), 5),
        "final_loss": round(losses[-1], 5) if losses else None,
        "resumed_from_step": int(Path(checkpoint).name.split("-")[-1]) if checkpoint else None,
        "train_seconds": round(train_seconds, 2),
        "curves": curve_destinations(trackers, stage_dir),
        "checkpoint_every_k_layers": group,
        "trainable_parameters": trainable,
        "quantized_base": quantized,
    }
    return metrics


def logged_mean_loss(history: list[dict]) -> float:
    """The mean training loss over every logged step: each logged loss (a window's mean) weighted by its window."""
    total, previous = 0.0, 0
    for entry in history:
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - previous)
            previous = entry["step"]
    return total / previous if previous else float("nan")


def _checkpoints(output_dir: Path) -> list[tuple[Path, bool]]:
    """Every ``checkpoint-N`` folder, oldest first, with whether it was written to the end.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint without a readable one was cut
    off by a kill (-9, out of memory, power) part-way through, or is being written right now.
    """
    if not output_dir.is_dir():
        return []
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    found = sorted((int(m.group(1)), path) for path in output_dir.iterdir()
                   if path.is_dir() and (m := pattern.match(path.name)))
    return [(path, _readable_state(path)) for _, path in found]


def _readable_state(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoints written to the end, oldest first; reads only, so it is safe while training runs."""
    return [path for path, complete in _checkpoints(output_dir) if complete]


def last_complete_checkpoint(output_dir: Path, before_step: int | None = None) -> str | None:
    """The newest complete checkpoint (before step ``before_step``, if given); incomplete newer ones are removed
    (call it only when no trainer is writing there).

    An incomplete checkpoint cannot be resumed from, and left in place it would be picked as "latest" and
    could push a complete checkpoint out of the rotation.
    """
    for path, complete in reversed(_checkpoints(output_dir)):
        if not complete:
            shutil.rmtree(path, ignore_errors=True)
        elif before_step is None or int(path.name.split("-")[-1]) < before_step:
            return str(path)
    return None


def _save_model_dir(trainer: Trainer, model_dir: Path) -> None:
    """Write ``model_dir`` (safetensors, tokenizer, no pickles) so it appears whole or not at all.

    Every process of a distributed run takes part in ``save_model`` (FSDP and ZeRO-3 gather the
    weights across them) into one shared partial directory; the main process then renames it into
    place. A LoRA model is saved merged, as a plain full model (one trained on a quantised base merged into
    its full-precision weights).
    """
    accelerator = trainer.accelerator
    partial = model_dir.with_name(f".{model_dir.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        if accelerator.is_main_process:
            merged = merged_into_full_precision(model) if has_quantized_base(model) else model.merge_and_unload()
            merged.save_pretrained(str(partial), safe_serialization=True)
    else:
        trainer.save_model(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(partial))
        # The Trainer pickles its arguments next to the weights; finloom model directories hold no pickles.
        (partial / "training_args.bin").unlink(missing_ok=True)
        (partial / "training_args.json").write_text(trainer.args.to_json_string(), encoding="utf-8")
        if model_dir.exists():
            shutil.rmtree(model_dir)
        os.replace(partial, model_dir)
    accelerator.wait_for_everyone()


def curve_destinations(trackers, stage_dir: Path) -> dict[str, str]:
    """Where each tracker put the curves, for the manifest."""
    import os

    places = {"tensorboard": lambda: f"{Path(stage_dir).name}/tensorboard",
              "mlflow": lambda: __import__("mlflow").get_tracking_uri(),
              "wandb": lambda: f"{os.environ.get('WANDB_DIR', '.')}/wandb ({os.environ.get('WANDB_MODE', 'online')})",
              "trackio": lambda: os.environ.get("TRACKIO_DIR", "~/.cache/huggingface/trackio")}
    return {name: places[name]() for name in trackers}


def _tensorboard(log_dir: Path) -> TrainerCallback:
    """TensorBoard event files in ``STAGE/tensorboard`` (``tensorboard --logdir RUN``), every logged value."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(SummaryWriter(log_dir=str(log_dir)))


def load_log_history(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text(encoding="utf-8")) if Path(path).exists() else []
