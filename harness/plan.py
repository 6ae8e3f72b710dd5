"""Planning: load the suite, its tasks, data, candidates and manifest, and check everything before any
work starts (so bad input never leaves a half-written run directory). Also rebuilds the plan of a run
already on disk from its run.json, for `harness gate`, re-scoring and the dashboard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness import capacity, models
from harness.adapter_prompts import Prompting, as_trained
from harness.backends.vllm_server import VllmOptions
from harness.config import (
    Candidate,
    JudgeMetricSpec,
    Suite,
    TaskRef,
    TaskSpec,
    load_suite,
    load_task,
)
from harness.data import TaskData, load_extra_rows, load_task_data
from harness.data_check import TaskDataReport, check_task, word_count
from harness.errors import ConfigError, HarnessError
from harness.manifest_check import check_against, load_manifest
from harness.manifest_spec import Manifest
from harness.metrics import TaskMetrics
from harness.metrics.defined import task_metrics
from harness.prompts import check_template, choose_few_shot, render
from harness.records import Example, Request
from harness.rehearsal import rehearse as rehearse_on_cpu
from harness.rehearsal import sampled
from harness.run_record import RunRecord, unreadable
from harness.slicing import Partition, declared, meta_columns, partitions
from harness.snapshots import manifest_of, suite_of
from harness.sources.files import file_sha256
from harness.store import RunDir

# A run that reached scoring: complete, or with failed requests scored as empty answers.
FINISHED = ("complete", "incomplete")


@dataclass
class PlannedTask:
    ref: TaskRef
    spec: TaskSpec
    data: TaskData
    metrics: TaskMetrics  # what its metric names mean: built-in ones and those it defines itself
    partitions: list[Partition] = field(default_factory=list)  # its test examples by each declared slicing

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def needs_detector(self) -> bool:
        """A detector runs when the task has a source passage and a metric that reads findings."""
        return self.spec.source is not None and any("detector" in self.metrics[m].needs for m in self.spec.metric_names)

    @property
    def metric_names(self) -> list[str]:
        """The task's own metrics, then the ones every task gets (latency, errors)."""
        return self.metrics.names

    def spec_for(self, candidate: Candidate) -> TaskSpec:
        """The task with the suite's prompt changes for this candidate, if any (what a fine-tune trains on);
        RunPlan.spec_for is what the candidate is asked, which for an `adapter:` may be its training prompt."""
        override = candidate.prompts.get(self.name)
        if override is None:
            return self.spec
        return self.spec.model_copy(update={"prompt": override.apply(self.spec.prompt)})


@dataclass
class RunPlan:
    suite: Suite
    suite_file: Path
    tasks: list[PlannedTask]
    suite_sha256: str = ""
    manifest: Manifest | None = None
    # Per fine-tuned candidate: its `extra_train` rows, read and checked once at plan time.
    extra_train: dict[str, list[Example]] = field(default_factory=dict)
    in_process: bool = False  # served candidates generated with transformers instead (`--in-process`)
    # Per candidate with an adapter (given or trained here), per task it runs: how it is prompted there.
    prompting: dict[str, dict[str, Prompting]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the user should know before work starts (said, not fatal)
    rehearsal: list[str] = field(default_factory=list)  # `--rehearse`: what the stand-ins changed (else empty)

    def spec_for(self, task: PlannedTask, candidate: Candidate) -> TaskSpec:
        """The task as this candidate is asked it: in the prompt its adapter was trained with where that applies,
        else with the suite's prompt changes for it."""
        how = self.prompting.get(candidate.name, {}).get(task.name)
        if how is not None and how.trained_prompt is not None:
            return task.spec.model_copy(update={"prompt": how.trained_prompt})
        return task.spec_for(candidate)

    def requests(self, task: PlannedTask, candidate: Candidate) -> list[Request]:
        shots = choose_few_shot(task.data.train, candidate.few_shot, self.suite.seed,
                                stratify=task.data.labels is not None)
        gen = task.spec.generation
        spec = self.spec_for(task, candidate)
        out = []
        for ex in task.data.test:
            prompt = render(spec, ex, shots, task.data.labels)
            out.append(Request(ex.id, prompt.messages, prompt.text, gen.max_new_tokens, gen.temperature,
                               tuple(gen.stop)))
        return out

    def task_metrics(self) -> dict[str, list[str]]:
        return {t.name: t.metric_names for t in self.tasks}


def _check_judges(spec: TaskSpec, suite: Suite, suite_file: Path) -> None:
    """Judges name candidates the suite has, and their models or servers are there."""
    scored = [c.name for c in suite.candidates_of(spec.name)]
    for i, metric in enumerate(spec.metrics):
        if not isinstance(metric, JudgeMetricSpec):
            continue
        if metric.against is not None and metric.against not in scored:
            raise ConfigError(spec.file, f"metrics.{i}.against", f"no candidate {metric.against!r} is scored on "
                              f"{spec.name} in {suite_file} (scored: {', '.join(scored)})")
        if metric.candidate:
            names = [c.name for c in suite.candidates]
            if metric.judge not in names:
                raise ConfigError(spec.file, f"metrics.{i}.judge", f"no candidate {metric.judge!r} in {suite_file}")
            if suite.candidate(metric.judge).finetune is not None:
                raise ConfigError(spec.file, f"metrics.{i}.judge", "a judge cannot be a candidate fine-tuned in "
                                  "the same run; name its adapter folder as a candidate instead")
            continue
        problem = metric.judge_model.problem() if metric.judge_model else None
        if problem:
            raise ConfigError(spec.file, f"metrics.{i}.judge", problem)


def _check_task(spec: TaskSpec) -> TaskMetrics:
    """The task's metrics, built (its own, checked before any work) and each one's needs met by the task."""
    metrics = task_metrics(spec)
    have = {"labels": spec.labels is not None, "reference": spec.data.reference is not None,
            "source": spec.source is not None, "detector": spec.source is not None, "latency": True,
            "ratings": False, "judge": True}
    for name in spec.metric_names:
        if name not in metrics:
            raise ConfigError(spec.file, "metrics", f"unknown metric {name!r}; known: {', '.join(metrics.known())}")
        needs = metrics[name].needs
        if "ratings" in needs:
            raise ConfigError(spec.file, "metrics", f"{name} comes from reviewers' ratings; name it in the "
                              "manifest's criteria, not in the task's metrics")
        missing = sorted(need for need in needs if not have[need])
        if missing:
            raise ConfigError(spec.file, "metrics", f"metric {name!r} needs the task to define {missing[0]}")
    check_template(spec)
    return metrics


def plan_tasks(suite: Suite, suite_file: Path) -> list[PlannedTask]:
    tasks = []
    for i, ref in enumerate(suite.tasks):
        try:
            spec = load_task(ref.task, relative_to=suite_file.parent)
        except ConfigError as exc:
            if exc.field == "tasks":
                raise ConfigError(suite_file, f"tasks.{i}.task", f"unknown task {ref.task!r}") from None
            raise
        metrics = _check_task(spec)
        _check_judges(spec, suite, suite_file)
        slicings = declared(spec, ref, suite_file, i)
        try:
            data = load_task_data(spec, ref.limit, ref.sample, suite.seed, meta_columns(spec, slicings))
        except ConfigError as exc:
            if exc.field == "sample":  # a suite setting, checked against the task's data
                raise ConfigError(suite_file, f"tasks.{i}.sample", exc.message) from None
            raise
        tasks.append(PlannedTask(ref, spec, data, metrics, partitions(slicings, data.test, data.labels)))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(suite_file, "tasks", "two task entries resolve to the same task name")
    return tasks


def load_suite_manifest(suite: Suite, suite_file: Path, override: Path | None = None) -> Manifest | None:
    """The manifest given on the command line, else the suite's own (inline or a file beside it)."""
    if override is not None:
        return load_manifest(override)
    if isinstance(suite.manifest, str):
        path = Path(suite.manifest)
        return load_manifest(path if path.is_absolute() else suite_file.parent / path)
    return suite.manifest


def check_manifest(manifest: Manifest, where: Path, suite: Suite, tasks: list[PlannedTask],
                   decidable: bool = True) -> None:
    """`decidable`: refuse a criterion the test examples could never decide (not a rehearsal's: said, insufficient)."""
    check_against(manifest, where, {t.name: [c.name for c in suite.candidates_of(t.name)] for t in tasks},
                  {t.name: t.metrics for t in tasks},
                  {t.name: len(t.data.test) for t in tasks} if decidable else None, suite.bootstrap.resamples,
                  {t.name: t.partitions for t in tasks})


def make_plan(suite_file: str | Path, manifest_file: Path | None = None, in_process: bool = False,
              rehearse: bool = False, sample: int | None = None) -> RunPlan:
    """Load and check the suite, its tasks, data, candidates and manifest. Raises HarnessError on bad input.
    `in_process`: every candidate whose weights are here is generated with transformers in this process
    instead of its server (for machines where vLLM does not install). `rehearse`: each model replaced by an
    embedded stand-in, the layout fitted to this CPU (rehearsal.py). `sample`: test examples per task at most."""
    suite_file = Path(suite_file)
    suite = load_suite(suite_file)
    manifest = load_suite_manifest(suite, suite_file, manifest_file)
    notes: list[str] = []
    rehearsed: list[str] = []  # what the rehearsal changed, recorded in run.json
    if rehearse:
        rehearsal = rehearse_on_cpu(suite, sample, manifest.min_examples if manifest else None)
        suite, rehearsed, notes = rehearsal.suite, rehearsal.notes, [f"rehearsal: {n}" for n in rehearsal.notes]
    elif sample is not None:
        suite = sampled(suite, sample)
    tasks = plan_tasks(suite, suite_file)
    # Before the in-process switch, which carries a served candidate's chat setting over to transformers.
    suite, prompting = as_trained(suite, suite_file, [t.spec for t in tasks])
    if in_process:
        notes += [f"{suite_file}: candidates.{i}: {', '.join(ignored)} apply to its server only; --in-process ignores "
                 "them" for i, c in enumerate(suite.candidates) if (ignored := c.options.in_process_ignores())]
        suite = suite.model_copy(update={"candidates": [
            c.model_copy(update={"options": c.options.in_process() or c.options}) for c in suite.candidates]})
    extra_train = _check_candidates(suite, suite_file, tasks)
    _check_layout(suite, suite_file)
    _check_detectors(suite_file, tasks)
    if manifest is not None:
        where = manifest_file or (suite.manifest if isinstance(suite.manifest, str) else f"{suite_file}: manifest")
        small = [t.name for t in tasks if len(t.data.test) < manifest.min_examples] if rehearse else []
        if small:
            notes.append(f"rehearsal: {', '.join(small)} sampled below the manifest's min_examples "
                         f"({manifest.min_examples}): their criteria will read insufficient")
        check_manifest(manifest, Path(where), suite, tasks, decidable=not small)
    return RunPlan(suite, suite_file, tasks, file_sha256(suite_file), manifest, extra_train, in_process, prompting,
                   notes, rehearsed)


def _check_layout(suite: Suite, suite_file: Path) -> None:
    """The vLLM servers' layout against this machine's GPU (`harness plan`'s checks); without a GPU only tensor
    parallelism against the heads, so suites made for a CPU run as they did."""
    if any(isinstance(c.options, VllmOptions) for c in suite.candidates):
        for where, message in capacity.layout_problems(suite, capacity.local_gpu(), _sizable_shape):
            raise ConfigError(suite_file, where, message)


def _sizable_shape(model: str) -> capacity.ModelShape | None:
    try:
        found = capacity.shape_of(model)
    except HarnessError:  # a config the planner cannot size (a mixture of experts) is left to vLLM
        return None
    return found.shape if found else None


def _check_detectors(suite_file: Path, tasks: list[PlannedTask]) -> None:
    for i, task in enumerate(tasks):
        spec = task.ref.detector
        if spec.needs_source and task.spec.source is None:
            raise ConfigError(suite_file, f"tasks.{i}.detector", f"detector {spec.name!r} needs the task to define "
                              f"`source` ({task.spec.file} has none)")
        problem = spec.problem() if task.needs_detector else None
        if problem:
            raise ConfigError(suite_file, f"tasks.{i}.detector", problem)


def _candidate_problems(cand: Candidate, names: list[str], tasks: list[PlannedTask]) -> Iterator[tuple[str, str]]:
    """(field, message) for everything that would stop this candidate, in the order a user would fix them."""
    for key, used in (("tasks", cand.tasks or []), ("prompts", list(cand.prompts))):
        unknown = [t for t in used if t not in names]
        if unknown:
            yield key, f"the suite has no task {unknown[0]!r} (has {', '.join(names)})"
    if cand.tasks == []:
        yield "tasks", "an empty task list scores nothing"
    for task in tasks:
        if task.name in cand.prompts:
            try:
                check_template(task.spec_for(cand))
            except ConfigError as exc:
                yield f"prompts.{task.name}.template", exc.message
    problem = models.check_adapter_dir(cand.adapter) if cand.adapter else None
    if problem:
        yield "adapter", problem
    rank = cand.finetune.rank if cand.finetune else (models.adapter_rank(cand.adapter) if cand.adapter else None)
    yield from cand.options.problems(cand.deployment(lora_rank=rank))
    if cand.finetune is not None:
        if not cand.options.local_weights:
            yield "finetune", (f"a candidate on backend {cand.backend} is served elsewhere and cannot be fine-tuned "
                               "here; use a backend with local weights (hf or vllm)")
        elif cand.finetune.task not in names:
            yield "finetune.task", f"the suite has no task {cand.finetune.task!r}"
    for task in tasks:
        if cand.few_shot > len(task.data.train):
            yield "few_shot", (f"{cand.few_shot} shots but task {task.name} has {len(task.data.train)} training "
                               "examples")


def _check_candidates(suite: Suite, suite_file: Path, tasks: list[PlannedTask]) -> dict[str, list[Example]]:
    """Every candidate's problems, as ConfigErrors; returns the fine-tunes' extra training rows."""
    names = [t.name for t in tasks]
    by_name = {t.name: t for t in tasks}
    extra: dict[str, list[Example]] = {}
    for i, cand in enumerate(suite.candidates):
        for key, message in _candidate_problems(cand, names, tasks):
            raise ConfigError(suite_file, f"candidates.{i}.{key}", message)
        if cand.finetune is not None:
            extra[cand.name] = _extra_rows(cand, by_name[cand.finetune.task], suite_file, i)
            problem = _parent_problem(cand, suite)
            if problem:
                raise ConfigError(suite_file, f"candidates.{i}.finetune.parent", problem)
    return extra


def _relative(path: str, suite_file: Path) -> Path:
    as_path = Path(path).expanduser()
    return as_path if as_path.is_absolute() else suite_file.parent / as_path


def _extra_rows(cand: Candidate, task: PlannedTask, suite_file: Path, index: int) -> list[Example]:
    """A fine-tune's `extra_train` rows, read in the task's columns and checked against its labels."""
    assert cand.finetune is not None
    rows: list[Example] = []
    for j, rel in enumerate(cand.finetune.extra_train):
        rows += load_extra_rows(task.spec, _relative(rel, suite_file), task.data.labels, suite_file,
                                f"candidates.{index}.finetune.extra_train.{j}")
    return rows


def parent_of(cand: Candidate, suite: Suite) -> tuple[str | None, Path | None]:
    """(the suite candidate it continues, if one; that candidate's adapter folder, or the folder named)."""
    name = cand.finetune.parent if cand.finetune else None
    if name is None:
        return None, None
    for other in suite.candidates:
        if other.name == name:
            return name, Path(other.adapter).expanduser() if other.adapter else None
    return None, Path(name).expanduser()  # a folder, read as `adapter:` is


def _parent_problem(cand: Candidate, suite: Suite) -> str | None:
    name, adapter = parent_of(cand, suite)
    if name is not None:
        names = [c.name for c in suite.candidates]
        parent = suite.candidate(name)
        if name == cand.name:
            return "a fine-tune cannot continue itself"
        if parent.model != cand.model:
            return f"{name} is built on {parent.model}, this candidate on {cand.model}"
        if adapter is None and parent.finetune is None:
            return f"candidate {name} has no adapter to continue"
        if parent.finetune is not None and names.index(name) > names.index(cand.name):
            return f"candidate {name} is trained after this one; list it first"
    if adapter is not None:
        return models.check_adapter_dir(adapter)
    return None


def check_data(run_plan: RunPlan) -> list[TaskDataReport]:
    """The data report of every task; lengths in tokens of the first local model's tokenizer, else words."""
    count, unit = word_count, "words"
    local = [(c.model, models.local_dir(c.model)) for c in run_plan.suite.candidates if c.options.local_weights]
    found = [(name, folder) for name, folder in local if folder is not None]
    if found:
        from transformers import AutoTokenizer

        name, folder = found[0]
        tokenizer = AutoTokenizer.from_pretrained(folder)

        def count(text: str) -> int:
            return len(tokenizer(text)["input_ids"])

        unit = f"tokens ({name})"
    return [check_task(t.name, t.data, run_plan.suite.allow_overlap, count, unit) for t in run_plan.tasks]


def tasks_of_run(run: RunDir) -> tuple[RunRecord, Suite, list[PlannedTask]]:
    """A finished run's record, suite snapshot and tasks (with their data, which must not have changed)."""
    if not run.exists():
        raise HarnessError(f"{run.path}: not a run directory (no run.json)")
    record = run.read_run()
    suite = suite_of(record, run.run_json)
    if len(record.tasks) != len(suite.tasks):
        raise unreadable(run.run_json, "tasks", f"{len(record.tasks)} tasks, but the suite has {len(suite.tasks)}")
    refs = [ref.model_copy(update={"task": record.tasks[name].file})
            for ref, name in zip(suite.tasks, record.tasks, strict=True)]
    suite = suite.model_copy(update={"tasks": refs})
    tasks = plan_tasks(suite, run.run_json)
    check_unchanged(record, tasks, f"run {run.run_id}")
    return record, suite, tasks


def check_unchanged(record: RunRecord, tasks: list[PlannedTask], run: str) -> None:
    """Each task file and its data as the run recorded them: a reference column, a metric's direction or a row
    changed afterwards would score the run's answers against something they were never asked (gate, --resume)."""
    for task in tasks:
        recorded = record.tasks.get(task.name)
        if recorded is None:
            raise HarnessError(f"{task.spec.file}: task {task.name!r} is not in {run}")
        if recorded.task_sha256 and file_sha256(task.spec.file) != recorded.task_sha256:
            raise HarnessError(f"{task.spec.file}: the task file changed since {run}; restore it, or start a new run")
        if task.data.files != recorded.data_sha256:
            raise HarnessError(f"{task.spec.file}: the task's data changed since {run}; restore it, or start a new run")


def plan_from_run(run_dir: Path, manifest_file: Path | None = None) -> tuple[RunPlan, RunDir]:
    """The plan a finished run was made with, from its run.json: the suite snapshot and the task files it
    recorded, whose data must not have changed since."""
    run = RunDir(run_dir)
    record, suite, tasks = tasks_of_run(run)
    if not any(run.predictions_file(c.name, t.name).is_file() for c in suite.candidates for t in tasks):
        raise HarnessError(f"{run_dir}: the run has no predictions")
    if record.status not in FINISHED:
        raise HarnessError(f"{run_dir}: the run has not finished (status {record.status!r}); gate it once "
                           "`harness run --resume` has completed it")
    manifest = load_manifest(manifest_file) if manifest_file else manifest_of(record, run.run_json)
    if manifest is None:
        raise HarnessError(f"{run_dir}: the run has no manifest; pass --manifest FILE")
    check_manifest(manifest, manifest_file or run.run_json, suite, tasks)
    return RunPlan(suite, Path(record.suite_file), tasks, record.suite_sha256, manifest), run
