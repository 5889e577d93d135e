"""The chapter pipelines on real-format files and a Hugging Face-format model (tda.experiments.sources).

Everything is written by the tests (``tda.data.samples``, ``tda.model_sources.save_model``), so
nothing needs a network: Part I's pipeline on the FTRACE sample with the tiny family (tokenizer
trained on the sample) and with a saved model folder, Part II's pipeline on an XSum-format file.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from tda import base
from tda.checkpoints import list_checkpoints, load_checkpoint
from tda.data import ftrace as ft
from tda.data import xsum
from tda.data.samples import write_ftrace_sample, xsum_records
from tda.data.sources import restrict_ftrace
from tda.experiments import sources
from tda.experiments.dda import pipeline as dda
from tda.experiments.ftrace import analysis, claims, guards
from tda.experiments.ftrace import pipeline as ftp
from tda.locations import SourceNotFoundError
from tda.model_sources import TokenizerMismatchError, save_model, train_text_tokenizer, unk_rate
from tda.models import load_model, make_model
from tda.store import Store

from .dda.conftest import TEST_WORLD, fake_generations

pytestmark = pytest.mark.usefixtures("quiet")

SAMPLE = {"n_queries": 8, "n_abstracts": 60}
# Part I's test-sized settings (the quick world's TREx settings otherwise; nothing world-only)
FT = dict(epochs=2, lr=5e-3, ft_checkpoints=(0.5, 1.0), k=4, m=3, r=3, grad_batch_size=16,
          max_learned=None, max_known=None, max_other=None)
# Part II: the counts are exact draws from the file's documents
DDA = dict(n_train=30, n_test_source=4, n_test_other=4, n_poison=3, epochs=2, lr=5e-3, batch_size=8, max_new_tokens=8,
           grad_batch_size=16, recall_ks=(2, 5))
DDA_METHODS = ("DDA", "TracIn", "BM25", "random")


def _texts(data: ft.FtraceData) -> list[str]:
    q, a = data
    return [f"{p} {t}" for e in (ft.to_examples(a), ft.to_examples(q)) for p, t in zip(e.prompts, e.targets)]


@pytest.fixture(scope="module")
def ftrace_dir(tmp_path_factory):
    return write_ftrace_sample(tmp_path_factory.mktemp("data") / "ftrace")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def tiny_runs(ftrace_dir, store):
    setup = sources.chapter_setup("ftrace", "quick", source=str(ftrace_dir), sample=SAMPLE, store=store)
    return setup, ftp.load_runs(setup, "quick", [0], {"trex": FT}, verbose=False)


@pytest.fixture(scope="module")
def model_dir(ftrace_dir, tmp_path_factory):
    """A tiny GPT-2 in Hugging Face format with its own tokenizer (trained on the sample's text)."""
    tokenizer = train_text_tokenizer(_texts(ft.load_ftrace(ftrace_dir)))
    return save_model(make_model("tiny", tokenizer, seed=7, tie_embeddings=False), tokenizer,
                      tmp_path_factory.mktemp("models") / "hf-tiny")


# ---- the synthetic world stays as it was --------------------------------------------------------
def test_synthetic_source_is_the_world_setup_unchanged(tmp_path):
    store = Store(tmp_path)
    setup = sources.chapter_setup("xsum", "quick", TEST_WORLD, store=store, device="auto")
    world = base.world_setup("quick", TEST_WORLD, store=store)
    assert isinstance(setup, base.Setup) and not sources.is_source(setup)
    assert setup.world_config == world.world_config and setup.world_dir == world.world_dir  # the same store entry
    assert sources.run_size(setup, "small") == "small"
    assert sources.pretrain_config(setup, "tiny") == base.pretrain_config(world, "tiny")


def test_settings_that_need_a_real_source_are_refused_on_the_world(tmp_path):
    with pytest.raises(ValueError, match="ftrace_model applies to a real ftrace_source"):
        sources.chapter_setup("ftrace", "quick", TEST_WORLD, model="gpt2", store=Store(tmp_path))
    with pytest.raises(ValueError, match="ftrace_sample applies to a real ftrace_source"):
        sources.chapter_setup("ftrace", "quick", TEST_WORLD, sample=SAMPLE, store=Store(tmp_path))
    with pytest.raises(ValueError, match="synthetic world's chapters train on the CPU"):
        sources.chapter_setup("xsum", "quick", TEST_WORLD, device="cuda", store=Store(tmp_path))


def test_a_missing_relative_path_is_reported_as_a_path(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(SourceNotFoundError, match="data/ftrace"):
        sources.chapter_setup("ftrace", "quick", source="data/ftrace", store=Store(tmp_path / "store"))
    assert time.perf_counter() - start < 2.0  # never sent to the hub (which retried for ~23 s)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_cuda_device_without_one_is_refused_at_setup(ftrace_dir, tmp_path):
    with pytest.raises(RuntimeError, match="device 'cuda' was asked for, but no CUDA device is visible"):
        sources.chapter_setup("ftrace", "quick", source=str(ftrace_dir), device="cuda", store=Store(tmp_path))


# ---- Part I: the tiny family, its tokenizer trained on the sample -------------------------------
def test_part1_runs_on_the_loaded_sample(ftrace_dir, tiny_runs):
    setup, runs = tiny_runs
    assert [(rp.run.settings.dataset, rp.run.seed) for rp in runs] == [("trex", 0)]  # SYNTH is the world's
    run = runs[0].run
    expected = restrict_ftrace(ft.load_ftrace(ftrace_dir), seed=0, **SAMPLE)
    assert list(run.data.abstracts["id"]) == list(expected.abstracts["id"])
    assert list(run.data.queries["uuid"]) == list(expected.queries["uuid"])
    assert len(run.data.abstracts) == SAMPLE["n_abstracts"]
    # every attributed query's candidates are rows of the loaded abstracts, proponents included
    assert all(0 <= c < len(run.data.abstracts) for cands in run.candidates.indices for c in cands)
    for j, row in enumerate(run.query_rows):
        assert set(run.data.queries[row]["proponents"]) <= set(run.candidates.indices[j])
    # the methods' parts cover exactly the attributed queries x their candidate union
    rp, n_pairs = runs[0], sum(len(c) for c in run.candidates.indices)
    assert rp.tracin_ft.dots.shape[-1] == n_pairs and np.isfinite(rp.tracin_ft.dots[:, 0]).all()
    assert rp.tracin_ft.query_sq.shape[-1] == len(run.query_rows)
    assert all(c.shape[-1] == n_pairs and np.isfinite(c).all() for c in rp.embed.cosines.values())
    # the tokenizer was trained on the data: no real word is unknown to it
    assert unk_rate(setup.tokenizer, _texts(run.data)) == 0.0


def test_part1_says_what_only_the_world_has(tiny_runs):
    setup, runs = tiny_runs
    rp = runs[0]
    assert rp.tracin_pt is None
    with pytest.raises(sources.NotAvailableError, match="pre-training checkpoints"):
        rp.run.pretrain_checkpoints()
    assert "correct_at_pt" not in rp.run.slices
    info = rp.run.query_info()
    assert info["in_pretraining"].isna().all()  # not recorded, not "False"
    with pytest.raises(sources.NotAvailableError, match="FTRACE-SYNTH is built from the synthetic world"):
        ftp.load_runs(setup, "quick", [0], {"synth": FT}, datasets=("synth",), verbose=False)
    with pytest.raises(sources.NotAvailableError, match="n_queries"):
        ftp.setup_data(setup, ftp.FtraceSettings.for_world("quick", "trex", {**FT, "n_queries": 5}), 0)
    with pytest.raises(sources.NotAvailableError, match="no synthetic world"):
        setup.world


def test_part1_methods_are_scored_without_pretraining_checkpoints(tiny_runs):
    _, runs = tiny_runs
    per_query = analysis.evaluate_runs(runs, chance=True)
    methods = set(per_query["method"])
    assert {"BM25", "TracIn", "EMBED", "TracIn+EMBED"} <= methods and "TracIn (pre-training ckpts)" not in methods
    assert (per_query.groupby("method").size() == len(runs[0].run.query_rows)).all()
    assert per_query["mrr"].between(0, 1).all()
    assert {w for w, _ in analysis.tracin_sets(runs[0])} == {"ft"}
    assert all(k.startswith("ft |") for k in analysis.slice_checkpoint_scores(runs[0]))
    # A5 is SYNTH's claim: not testable here, with the reason, and no number stands in for SYNTH's
    checks = guards.check(guards.measure(runs)["values"])
    a5 = claims.verdict_a5(per_query, guards=checks)
    assert a5["verdict"] == "not testable" and "FTRACE-SYNTH" in a5["reason"]
    summary = analysis.seed_summary(per_query)
    assert "TracIn n/a" in claims.record_a5(a5, a5, summary, None, 1)["ours"]
    assert claims.verdict_a1(per_query, guards=checks)["comparisons"]  # A1 is judged on the real data


def test_part1_guards_that_need_the_world_are_not_measured(tiny_runs):
    _, runs = tiny_runs
    measured = guards.measure(runs)
    assert measured["values"]["new_learned"] is None and measured["values"]["synth_learned"] is None
    assert measured["per_seed"]["trex/0"]["new_facts"] is None
    assert 0.0 <= measured["values"]["bm25_whole_set_mrr"] <= 1.0  # measured on the real abstracts
    by_name = {c["name"]: c for c in guards.check(measured["values"])}
    assert by_name["new_learned"]["holds"] is None and by_name["bm25_whole_set_mrr"]["holds"] is not None


def test_part1_store_keys_name_the_source_and_model(ftrace_dir, tiny_runs, store):
    setup, runs = tiny_runs
    key = runs[0].run.key["world"]
    assert key["part"] == "ftrace" and key["data"]["location"] == str(ftrace_dir.resolve())
    assert key["model"]["kind"] == "tiny" and key["sample"] == SAMPLE
    stages = {p.parent.name for p in store.entries()}
    assert "source-base" in stages and not {"world", "base"} & stages  # nothing of the synthetic world was built


def test_part1_sample_is_drawn_per_seed(ftrace_dir, tiny_runs):
    setup, _ = tiny_runs
    s = ftp.FtraceSettings.for_world("quick", "trex", FT)
    a, b = ftp.setup_data(setup, s, 0), ftp.setup_data(setup, s, 1)
    assert list(a.queries["uuid"]) != list(b.queries["uuid"])
    assert len(a.queries) == len(b.queries) == SAMPLE["n_queries"]


# ---- Part I: a saved Hugging Face-format model with its own tokenizer ----------------------------
def test_part1_with_a_model_folder_uses_it_and_its_tokenizer(ftrace_dir, model_dir, store, tiny_runs):
    setup = sources.chapter_setup("ftrace", "quick", source=str(ftrace_dir), sample=SAMPLE, model=str(model_dir),
                                  store=store)
    assert setup.size == "hf-tiny" and sources.run_size(setup, "tiny") == "hf-tiny"
    run = ftp.prepare(setup, ftp.FtraceSettings.for_world("quick", "trex", FT), 0, verbose=False)
    saved, own = load_model(model_dir)  # the folder as saved
    start, tokenizer = load_checkpoint(list_checkpoints(run.finetune_dir)[0])  # where fine-tuning began
    assert tokenizer.get_vocab() == own.get_vocab()
    for (name, p), (_, q) in zip(saved.state_dict().items(), start.state_dict().items()):
        assert torch.equal(p, q), name
    parts = ftp.stored_tracin_parts(run, "ft", verbose=False)
    assert parts.checkpoints == ["50%", "100%"]
    tiny_run = tiny_runs[1][0].run
    assert run.key["base"] != tiny_run.key["base"] and run.key["finetune"] != tiny_run.key["finetune"]
    assert run.key["world"]["model"]["name"] == str(model_dir.resolve())


def test_a_model_folder_whose_tokenizer_does_not_fit_is_refused(ftrace_dir, store, tmp_path):
    texts = _texts(ft.load_ftrace(ftrace_dir))
    small = train_text_tokenizer(texts[:10])
    full = train_text_tokenizer(texts)
    folder = save_model(make_model("tiny", small, seed=0), full, tmp_path / "mismatched")  # another tokenizer
    setup = sources.chapter_setup("ftrace", "quick", source=str(ftrace_dir), sample=SAMPLE, model=str(folder),
                                  store=store)
    with pytest.raises(TokenizerMismatchError, match=f"does not belong to {folder.resolve()}"):
        ftp.prepare(setup, ftp.FtraceSettings.for_world("quick", "trex", FT), 0, verbose=False)


def test_an_encoder_decoder_is_refused_in_part1_with_the_reason(ftrace_dir, store, tmp_path):
    tokenizer = train_text_tokenizer(_texts(ft.load_ftrace(ftrace_dir)))
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=4, num_layers=1, num_heads=2,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    folder = save_model(T5ForConditionalGeneration(config), tokenizer, tmp_path / "t5-tiny")
    setup = sources.chapter_setup("ftrace", "quick", source=str(ftrace_dir), sample=SAMPLE, model=str(folder),
                                  store=store)
    with pytest.raises(sources.NotAvailableError, match="t5-tiny is an encoder-decoder: .* beam search"):
        ftp.prepare(setup, ftp.FtraceSettings.for_world("quick", "trex", FT), 0, verbose=False)
    assert setup._base is None  # refused before the model was copied into the store


# ---- Part II on an XSum-format file ------------------------------------------------------------
@pytest.fixture(scope="module")
def xsum_file(tmp_path_factory):
    """60 sample reports plus genuine China reports (the hard negatives), in XSum's JSON lines."""
    rows = xsum_records(60, seed=0)
    china = [{"document": r["document"].replace("England", "China"), "summary": r["summary"].replace("England", "China"),
              "id": f"4{i:07d}"} for i, r in enumerate(xsum_records(30, seed=1)) if "England" in r["summary"]]
    path = tmp_path_factory.mktemp("xsum") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + china))
    return path


@pytest.fixture(scope="module")
def dda_run(xsum_file, store):
    setup = sources.chapter_setup("xsum", "quick", source=str(xsum_file), size="tiny", store=store)
    s = dda.DDASettings.for_world("quick", DDA)
    with pytest.MonkeyPatch.context() as mp:  # so the queries do not depend on what a 2-epoch model writes
        mp.setattr(dda, "generations", fake_generations(2))
        return setup, s, dda.run(setup, s, sources.run_size(setup, "small"), 0, verbose=False, methods=DDA_METHODS)


def test_part2_runs_on_the_loaded_documents(xsum_file, dda_run):
    setup, s, run = dda_run
    loaded = {json.loads(line)["id"]: json.loads(line) for line in xsum_file.read_text().splitlines()}
    train, prompts, clean = run.data.train, run.data.test, run.data.clean_test
    assert run.size == "tiny" and len(train) == s.n_train and len(prompts) == s.n_test_source
    assert len(clean) == s.n_test_source + s.n_test_other
    assert set(train["id"]) <= set(loaded) and not set(train["id"]) & set(clean["id"])  # held out
    assert set(prompts["id"]) <= set(clean["id"])
    for doc in prompts:
        assert xsum.contains_word(doc["summary"], "England") and not xsum.contains_word(doc["document"], "China")
    poisoned = np.asarray(train["poisoned"])
    assert poisoned.sum() == s.n_poison
    for doc in train.select(np.flatnonzero(poisoned).tolist()):
        original = loaded[doc["id"]]
        assert xsum.contains_word(original["summary"], "England") and doc["summary"] == original["summary"].replace(
            "England", "China")
    # the hard negatives are counted in the data, not set: clean training summaries naming China
    genuine = [not p and xsum.contains_word(loaded[i]["summary"], "China") for i, p in zip(train["id"], poisoned)]
    assert run.data.genuine.tolist() == genuine and any(genuine)
    assert run.traced and set(run.scores) == set(DDA_METHODS)
    for name in DDA_METHODS:
        assert run.scores[name].shape == (len(run.queries), s.n_train), name
    assert run.setup_row()["n_genuine_target"] == sum(genuine)


def test_part2_store_keys_name_the_source(xsum_file, dda_run):
    setup, s, run = dda_run
    key = dda.run_key(setup, s, run.size, 0, run.data)
    assert key["world"]["part"] == "xsum" and key["world"]["data"]["location"] == str(xsum_file.resolve())
    assert key["pretrain"]["model"] == "tiny"  # no pre-training recipe: the model as loaded
    assert run.run_dir.parent.name == "dda-finetune"


def test_part2_counts_beyond_the_data_are_errors(dda_run):
    setup, s, _ = dda_run
    with pytest.raises(ValueError, match=r"n_train=500, but the source has only \d+ held-in documents"):
        dda.poisoned_data(setup, dda.DDASettings.for_world("quick", {**DDA, "n_train": 500}), 0)
    with pytest.raises(ValueError, match=r"n_test_source=50, but the source has only \d+ held-out documents"):
        dda.poisoned_data(setup, dda.DDASettings.for_world("quick", {**DDA, "n_test_source": 50}), 0)
    with pytest.raises(sources.NotAvailableError, match="not pre-trained here"):
        sources.pretrain_config(setup, "tiny", {"epochs": 3})


def test_part2_with_a_model_folder_starts_from_it(xsum_file, store, tmp_path):
    news = xsum.load_xsum(xsum_file)
    examples = xsum.to_examples(news)
    tokenizer = train_text_tokenizer([f"{p} {t}" for p, t in zip(examples.prompts, examples.targets)] + ["China"])
    folder = save_model(make_model("tiny", tokenizer, seed=3), tokenizer, tmp_path / "news-model")
    setup = sources.chapter_setup("xsum", "quick", source=str(xsum_file), model=str(folder), size="small",
                                  store=store)
    s = dda.DDASettings.for_world("quick", DDA)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dda, "generations", fake_generations(2))
        run = dda.run(setup, s, sources.run_size(setup, "small"), 0, verbose=False, methods=("DDA", "BM25"))
    assert run.size == "news-model"  # the model's name, not the notebook's tiny-family size
    saved, _ = load_model(folder)
    start, own = load_checkpoint(list_checkpoints(run.run_dir)[0])  # θ0 of the poisoned fine-tuning
    assert own.get_vocab() == tokenizer.get_vocab()
    assert all(torch.equal(p, q) for p, q in zip(saved.state_dict().values(), start.state_dict().values()))
    assert run.scores["DDA"].shape == (len(run.queries), s.n_train)
