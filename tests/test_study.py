"""The study end to end: the real CLI, a real local Ray instance, a real MLflow store, tiny budgets."""

from __future__ import annotations

import json

import pytest

from search_spaces import SPACE_NAMES, Choice, LogUniform, SearchSpace, Uniform, load_space
from study.analysis.trials import pareto_front
from study.errors import ConfigError
from study.evaluation.crosslingual import CONSTRAINT
from study.orchestration.settings import StudySettings
from study.orchestration.tracking import PARENT_TAG
from studytools import mlflow_fluent_uri, run_cli, study_runs


# ----------------------------------------------------------------------------- search spaces
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_space_validates_and_samples_inside_bounds(name):
    import optuna

    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):  # the define-by-run function, as OptunaSearch calls it
        trial = study.ask()
        space.define_by_run(trial)
        assert set(trial.params) == set(space.active(trial.params))
        for key, value in trial.params.items():
            spec = space.space[key]
            assert value in spec.options if isinstance(spec, Choice) else spec.low <= value <= spec.high, (key, value)
        study.tell(trial, 0.0)
    baseline = space.baseline_point()
    assert baseline["ratio"] == 0.0 and set(baseline) == set(space.active(baseline))
    assert {"epsilon", "method"} <= {*space.space, *space.fixed} or name == "hybrid_ratio"


def test_the_attack_space_samples_steps_and_step_size_only_for_the_methods_that_step(tmp_path):
    """Issue 14: FGSM ignores K and alpha/epsilon, so its trials must not spend search dimensions on them."""
    from study.orchestration.tuning import make_searcher, trial_param_space

    space = load_space("attack")
    settings = StudySettings(space="attack", budget="smoke", num_samples=40, epochs=1, max_concurrent=40,
                             model="m", eval={"langs": ["swh"]}, batch_size=8, max_train_pairs=8)
    limiter = make_searcher(settings, space)
    configs = [limiter.suggest(f"t{i}") for i in range(40)]
    assert configs[0] == space.baseline_point(), "the r = 0 baseline comes first, as enqueued"
    methods = {c["method"] for c in configs}
    assert methods == {"pgd", "fgsm", "freelb"}
    for config in configs:
        stepping = config["method"] != "fgsm"
        assert ("attack_steps" in config) == stepping and ("step_ratio" in config) == stepping, config
    fgsm = [t for t in limiter.searcher._ot_study.trials if t.params.get("method") == "fgsm"]
    assert fgsm and all(set(t.distributions) == {"ratio", "epsilon", "method"} for t in fgsm)
    # a trial left without the steps runs them at TrialConfig's default; the param space holds no search domain
    assert not {"attack_steps", "step_ratio", "method"} & set(trial_param_space(settings, space))
    limiter.save(str(tmp_path / "searcher.pkl"))  # Tune pickles the searcher, define-by-run space included


@pytest.mark.parametrize("space, message", [
    (SearchSpace("bad", "", {"ratio": Uniform(0.0, 1.5)}, {}), "outside [0.0, 1.0]"),
    (SearchSpace("bad", "", {"ratio": Uniform(0.0, 1.0), "epsilon": LogUniform(0.0, 1.0)}, {}), "log scale"),
    (SearchSpace("bad", "", {"ratio": Uniform(0.0, 1.0), "learning_rate": Uniform(0.1, 0.2)}, {}), "unknown key"),
    (SearchSpace("bad", "", {"ratio": Uniform(0.0, 1.0)}, {"method": "pgdx"}), "not one of"),
    (SearchSpace("bad", "", {"ratio": Uniform(0.5, 0.1)}, {}), "must be below"),
    (SearchSpace("bad", "", {"epsilon": Uniform(0.1, 0.2)}, {}), "must search 'ratio'"),
])
def test_malformed_space_gives_a_clear_error(space, message):
    with pytest.raises(ConfigError, match="search space 'bad'") as err:
        space.validate()
    assert message in str(err.value)


def test_pareto_front_is_non_dominated():
    points = [(0.9, 0.1), (0.5, 0.5), (0.4, 0.4), (0.1, 0.9), (0.5, 0.2)]
    assert sorted(pareto_front(points)) == [0, 1, 3]


# ----------------------------------------------------------------------------- real studies
@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    """The README's quick-start smoke line, as it stands there (test_docs.py reads it), with 3 trials and an --out."""
    from test_docs import readme_smoke_argv

    study_dir = tmp_path_factory.mktemp("studies") / "smoke"
    result = run_cli(*readme_smoke_argv(), "--num-samples", "3", "--out", str(study_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return study_dir, result


def test_smoke_study_logs_a_parent_and_one_child_run_per_trial(smoke_study):
    study_dir, result = smoke_study
    client, parent, children = study_runs(study_dir)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["space"] == "hybrid_ratio"
    assert len(children) == 3
    ratios = sorted(float(c.data.params["ratio"]) for c in children)
    assert ratios[0] == 0.0, "the r = 0 baseline is always a trial"
    langs = json.loads((study_dir / "study.json").read_text())["settings"]["eval"]["langs"]
    for child in children:
        assert child.info.status == "FINISHED"
        for lang in langs:
            # the selection split every epoch (what the objective saw), the report split at the last one
            for split in ("selection", "report"):
                for figure in ("clean", "l2e", "e2l", "attacked_eps0.05", "attacked_eps0.2", "noise_eps0.05",
                               "typo_p0.1", "robust"):
                    history = client.get_metric_history(child.info.run_id, f"{split}.acc.{lang}.{figure}")
                    assert [m.step for m in history] == [1], (split, lang, figure)
                    assert 0.0 <= history[0].value <= 1.0
        metrics = child.data.metrics
        assert metrics["objective.robust"] == metrics["selection.group.low.robust"], "the search sees selection"
        assert "report.group.low.robust" in metrics and "en.stsb_spearman" in metrics
    # cross-lingual similarity in every evaluation; the constraint against the untrained encoder the trial measured
    # itself (once per worker), which is the driver's reference row: the same model, pairs and code
    reference = json.loads((study_dir / "reference.json").read_text())["metrics"]
    for child in children:
        metrics = child.data.metrics
        for key in ("selection.xsts.mean", "selection.xpara.mean", "selection.xsts.de", "report.xsts.mean",
                    "report.xpara.pt", CONSTRAINT, "selection.xsts.vs_untrained_se"):
            assert key in metrics, key
        assert metrics["selection.xsts.vs_untrained"] == pytest.approx(
            metrics["selection.xsts.mean"] - reference["selection.xsts.mean"], abs=1e-4)
        assert metrics[CONSTRAINT] == pytest.approx(-(metrics["selection.xsts.vs_untrained"]
                                                      + metrics["selection.xsts.vs_untrained_se"]))
    assert {"selection.xsts.mean", "report.xsts.mean", "report.xpara.mean"} <= set(reference)
    # ... and Optuna saw each trial's constraint through Ray's OptunaSearch (the searcher state Tune saved)
    from study.orchestration.tuning import make_searcher

    settings = StudySettings.from_json(json.loads((study_dir / "study.json").read_text())["settings"])
    searcher = make_searcher(settings, load_space(settings.space))
    searcher.restore_from_dir(str(study_dir / "ray" / "tune"))
    told = sorted(t.constraints["xsts"] for t in searcher.searcher._ot_study.trials)
    assert told == pytest.approx(sorted(c.data.metrics[CONSTRAINT] for c in children))
    # trained trials moved away from the untrained encoder, and the attack hurt
    assert any(abs(c.data.metrics["en.stsb_spearman"] - reference["en.stsb_spearman"]) > 1e-6 for c in children)
    for split in ("selection", "report"):
        assert reference[f"{split}.group.low.robust"] < reference[f"{split}.group.low.l2e"]
    summary = (study_dir / "report" / "summary.md").read_text()
    assert "on the report split" in summary
    assert "## Trials" in summary and "| en-de | xling | STS Spearman |" in summary
    assert summary.count(" met |") + summary.count("**not met**") == 3, "every trial's constraint, met or not"
    assert "r=0 baseline" in result.stdout and "mlflow ui --backend-store-uri" in result.stdout
    assert "Ray dashboard: http://127.0.0.1:" in result.stderr
    check_lineage(study_dir, client, parent, children)


def check_lineage(study_dir, client, parent, children) -> None:
    """Issue 27: what MLflow users expect of runs. Parent and children carry mlflow.start_run's context tags (made by
    MlflowClient.create_run, they would not), each child names the files it read as dataset inputs (digest of the
    content, split as context), the parent describes the study and, at its end, its answer."""
    import hashlib
    import subprocess
    from pathlib import Path

    from study.analysis.trials import best_trial, load_trials
    from study.evaluation.robustness import EvalConfig
    from study.orchestration.tracking import DATA_CONTEXT, NOTE_TAG

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                          text=True).stdout.strip()
    for run in (parent, *children):
        tags = run.data.tags
        assert tags["mlflow.source.git.commit"] == head and len(head) == 40, run.info.run_name
        assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"].endswith("study/run.py")
        assert tags["mlflow.user"]
    settings = json.loads((study_dir / "study.json").read_text())["settings"]
    evaluation, data_dir = EvalConfig(**settings["eval"]), Path(settings["data_dir"])
    halves = [f"tatoeba/tatoeba.{lang}-eng.{side}" for lang in evaluation.langs for side in (lang, "eng")]
    halves += ["stsb-multi-mt/stsb-en-dev.csv"] + [f"stsb-multi-mt/stsb-{x}-dev.csv" for x in evaluation.xsts_langs]
    expected = {("stsb-multi-mt/stsb-en-train.csv", "training"), ("msrp/msr-para-train.tsv", "training"),
                ("stsb-multi-mt/stsb-en-test.csv", "english_check"), ("msrp/msr-para-test.tsv", "english_check")}
    expected |= {(f"{name} ({split} half)", split) for name in halves for split in ("selection", "report")}
    for child in children:
        inputs = client.get_run(child.info.run_id).inputs.dataset_inputs
        assert {(i.dataset.name, {t.key: t.value for t in i.tags}[DATA_CONTEXT]) for i in inputs} == expected
        for entry in inputs:
            path = data_dir / entry.dataset.name.split(" (")[0]
            assert entry.dataset.digest == hashlib.sha256(path.read_bytes()).hexdigest()[:12], entry.dataset.name
            assert json.loads(entry.dataset.source)["uri"] == path.resolve().as_uri()
    note = parent.data.tags[NOTE_TAG]
    assert "search space `hybrid_ratio`" in note and "r uniform on [0, 1]" in note
    assert "epsilon log-uniform on [0.01, 4]" in note and "`objective.robust`" in note
    assert f"`{study_dir.resolve() / 'report' / 'summary.md'}`" in note
    best = best_trial(load_trials(client, parent.info.experiment_id, parent.info.run_id), "robust")
    assert f"**Answer:** trial `{best['name']}` (run `{best['run_id']}`)" in note


def test_report_regenerates_the_same_table(smoke_study):
    study_dir, _ = smoke_study
    report = study_dir / "report"
    for name in ("summary.md", "summary.csv", "trials.csv", "tradeoff.png", "heatmap.png", "radius_curves.png",
                 "pareto.png", "best_config.json"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    before = (report / "summary.csv").read_text()
    (report / "summary.csv").unlink()
    result = run_cli("study.report", str(study_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (report / "summary.csv").read_text() == before
    client, parent, _ = study_runs(study_dir)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/summary.md", "report/heatmap.png", "report/radius_curves.png"} <= logged


def test_export_writes_a_sentence_transformers_model_and_registers_it(smoke_study, data_dir):
    """Issue 16: the study's best trial as a model: SentenceTransformer(DIR) gives the project's Encoder's
    embeddings of that trial; the registered version carries the figures and loads through models:/NAME@best."""
    import mlflow
    import numpy as np
    from ray.tune import ExperimentAnalysis
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    from study.analysis.exporting import is_tagged_figure, project_encoder
    from study.encoder.loading import resolve_model
    from study.evaluation.data import load_tatoeba
    from study.orchestration.tracking import default_tracking_uri

    study_dir, _ = smoke_study
    result = run_cli("study.export", str(study_dir), "--register", "xling-smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent, children = study_runs(study_dir)
    finished = [c for c in children if c.info.status == "FINISHED"]
    (out,) = [p for p in (study_dir / "export").iterdir() if p.is_dir()]
    record = json.loads((out / "export.json").read_text())
    best = next(c for c in finished if c.info.run_id == record["run_id"])
    trial_id = best.data.tags["ray.trial_id"]
    assert record["trial"] == trial_id and out.name == trial_id
    # best = the trial the report names: by the objective (selection split), not by the report split it quotes,
    # among the trials that do no harm to cross-lingual similarity
    eligible = [c for c in finished if c.data.metrics[CONSTRAINT] <= 0]
    assert best.data.metrics["objective.robust"] == max(c.data.metrics["objective.robust"] for c in eligible)
    assert best.data.metrics[CONSTRAINT] <= 0
    assert f"exported to {out}" in result.stdout

    # offline, as a user loads it, against the project's Encoder with the trial's checkpoint weights
    model = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    assert model.default_prompt_name == "query" and model.prompts["query"] == "query: "
    trial = next(t for t in ExperimentAnalysis(str(study_dir / "ray" / "tune")).trials if t.trial_id == trial_id)
    with trial.checkpoint.as_directory() as folder:
        weights = load_file(f"{folder}/trainable_weights.safetensors")
    max_len = int(best.data.params["max_seq_len"])
    encoder = project_encoder(resolve_model(None), weights, max_len)
    sentences = [s for lang in ("swh", "uig", "deu") for s in load_tatoeba(lang, data_dir, 8)["source"]]
    sentences.append("a long sentence " * 60)  # longer than max_seq_len: both truncate alike
    cosine = (model.encode(sentences, convert_to_tensor=True) * encoder.embed(sentences)).sum(1)
    print(f"\nexported model vs Encoder: min cosine {cosine.min().item():.6f} over {len(sentences)} sentences")
    assert cosine.min().item() >= 0.9999

    # the registry: a version under the trial's run, with its figures, the alias best, loadable as pyfunc
    version = client.get_model_version_by_alias("xling-smoke", "best")
    assert version.run_id == best.info.run_id
    tags = version.tags
    assert tags["study"] == study_dir.name and tags["trial"] == trial_id and tags["method"] == "pgd"
    assert float(tags["ratio"]) == float(best.data.params["ratio"])
    assert float(tags["epsilon"]) == float(best.data.params["epsilon"])
    figures = {k: v for k, v in best.data.metrics.items() if is_tagged_figure(k)}
    for lang in ("swh", "uig", "deu"):  # clean and robust accuracy per language, on each split measured
        assert {f for f in figures if f.endswith((f"acc.{lang}.clean", f"acc.{lang}.robust"))}, lang
    for name, value in figures.items():
        assert float(tags[name]) == pytest.approx(value, abs=1e-4), name
    print("registered version tags:", json.dumps(dict(sorted(tags.items()))))
    assert client.get_run(best.info.run_id).data.tags["registered_model"] == f"xling-smoke/{version.version}"
    with mlflow_fluent_uri(default_tracking_uri(study_dir)):  # the study's embedded store
        pyfunc = mlflow.pyfunc.load_model("models:/xling-smoke@best")
        predicted = np.asarray(pyfunc.predict(sentences[:3]))
        signature = mlflow.models.get_model_info("models:/xling-smoke@best").signature
    assert predicted.shape == (3, 384)
    assert (predicted * model.encode(sentences[:3])).sum(1).min() >= 0.9999
    # issue 27: logged with an input example, so its signature is the model's own (the flavour's default: float64, 1-D)
    assert [(spec.type.name, spec.required) for spec in signature.inputs.inputs] == [("string", True)]
    (output,) = signature.outputs.inputs
    assert (output.type, output.shape) == (np.dtype("float32"), (-1, 384))


def test_pareto_study_returns_a_non_dominated_set(tmp_path):
    study_dir = tmp_path / "pareto"
    result = run_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples", "3",
                     "--objective", "pareto", "--out", str(study_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Pareto-optimal trials" in result.stdout
    front = json.loads((study_dir / "report" / "pareto.json").read_text())
    _, _, children = study_runs(study_dir)
    objectives = ("objective.clean", "objective.robust", "objective.xsts")  # cross-lingual similarity is one
    points = [tuple(c.data.metrics[m] for m in objectives) for c in children]
    assert front and len(children) == 3
    for member in front:
        mine = (member["clean"], member["robust"], member["xsts"])
        assert not any(all(a >= b for a, b in zip(p, mine)) and p != mine for p in points)
    assert len(front) == len(pareto_front(points))


def test_replicate_produces_the_findings_report(smoke_study):
    study_dir, _ = smoke_study
    result = run_cli("study.replicate", str(study_dir), "--top", "1", "--seeds", "2", "--register", "xling-replicated",
                     timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = study_dir / "replication"
    for name in ("findings.md", "analysis.json", "distance.json", "distance.png", "robustness_curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    findings = (out / "findings.md").read_text()
    for section in ("## Question", "## Set-up", "## Answer", "## Language distance", "## Not significant",
                    "## Cross-lingual similarity", "## Every replicated configuration"):
        assert section in findings
    assert "reduced smoke budget" in findings and "2 seeds" in findings
    client, parent, _ = study_runs(study_dir)
    replication = client.get_run(parent.data.tags["replication_run"])
    replicas = client.search_runs([replication.info.experiment_id],
                                  filter_string=f"tags.`{PARENT_TAG}` = '{replication.info.run_id}'")
    assert len(replicas) == (1 + 1) * 2, "(K + 1) x N trials"
    assert {r.info.status for r in replicas} == {"FINISHED"}
    analysis = json.loads((out / "analysis.json").read_text())
    assert set(analysis) == {"baseline", "best1"}
    entry = analysis["best1"]["group:low|robust"]["vs_baseline"]
    assert entry["low"] <= entry["mean"] <= entry["high"]
    for figure in ("xsts", "xpara"):  # cross-lingual similarity on the report half, against r = 0 and untrained
        for versus in ("vs_baseline", "vs_untrained"):
            entry = analysis["best1"][f"xling|{figure}"][versus]
            assert entry["low"] <= entry["mean"] <= entry["high"], (figure, versus)
    assert "languages:low|robust|vs_baseline" in analysis["best1"]
    # issue 16: the best configuration as a model; the findings and the registered version name each other
    assert (out / "model" / "modules.json").is_file() and "## The model" in findings
    version = client.get_model_version_by_alias("xling-replicated", "best")
    assert f"`xling-replicated` version {version.version}" in findings
    assert version.tags["replication_run"] == replication.info.run_id and version.tags["replica"] == "best1"
    assert version.tags["findings"] == f"runs:/{replication.info.run_id}/findings/findings.md"
    assert version.run_id in {r.info.run_id for r in replicas}
    assert replication.data.tags["registered_model"] == f"xling-replicated/{version.version}"


# ----------------------------------------------------------------------------- early stopping and the searcher
def _searcher_and_scheduler(space_name: str = "full"):
    from study.orchestration.tuning import make_scheduler, make_searcher

    space = load_space(space_name)
    settings = StudySettings(space=space_name, budget="smoke", num_samples=8, epochs=1, max_concurrent=8)
    scheduler = make_scheduler(settings, space)
    scheduler.set_search_properties("objective.robust", "max")
    limiter = make_searcher(settings, space, scheduler)
    return limiter, scheduler


def test_a_stopped_trial_is_pruned_with_its_last_value_and_a_one_epoch_trial_completes():
    import optuna

    limiter, scheduler = _searcher_and_scheduler()
    assert scheduler._max_t == 3, "ASHA's horizon is the space's largest epochs, not the study's"
    for trial_id in ("short", "stopped"):
        limiter.suggest(trial_id)
    # Ray hands searchers flattened results ("config/epochs"); it skips on_trial_result for the result that
    # made ASHA stop the trial, so on_trial_complete sees that epoch first
    limiter.on_trial_result("short", {"objective.robust": 0.7, "training_iteration": 1, "config/epochs": 1})
    limiter.on_trial_complete("short", {"objective.robust": 0.7, "training_iteration": 1, "config/epochs": 1})
    limiter.on_trial_complete("stopped", {"objective.robust": 0.4, "training_iteration": 1, "config/epochs": 3})
    trials = {t.number: t for t in limiter.searcher._ot_study.trials}
    short, stopped = trials[0], trials[1]
    assert short.state == optuna.trial.TrialState.COMPLETE and short.value == 0.7
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.intermediate_values == {1: 0.4}


def test_asha_never_stops_the_baseline_and_its_records_survive_a_restore(tmp_path):
    from ray.tune.experiment import Trial

    from study.orchestration.tuning import rung_records

    limiter, scheduler = _searcher_and_scheduler()
    trials = {name: Trial("__fake", config={"ratio": ratio, "epochs": 3}, stub=True)
              for name, ratio in (("good", 0.5), ("better", 0.6), ("baseline", 0.0), ("weak", 0.4))}
    decisions = {}
    for name, value in (("good", 0.8), ("better", 0.9), ("baseline", 0.1), ("weak", 0.1)):
        scheduler.on_trial_add(None, trials[name])
        decisions[name] = scheduler.on_trial_result(None, trials[name], {"training_iteration": 1,
                                                                         "objective.robust": value})
    assert decisions["weak"] == scheduler.STOP, "a weak trial is stopped at the first rung"
    assert decisions["baseline"] == scheduler.CONTINUE, "the r = 0 baseline, just as weak, is not"

    limiter.save(str(tmp_path / "searcher.pkl"))  # what Tune saves with the experiment
    fresh_limiter, fresh_scheduler = _searcher_and_scheduler()  # a resumed driver's objects
    fresh_limiter.restore(str(tmp_path / "searcher.pkl"))
    assert rung_records(fresh_scheduler) == rung_records(scheduler)
    assert len(rung_records(fresh_scheduler)[0][-1]) == 4  # the first rung holds all four trials
