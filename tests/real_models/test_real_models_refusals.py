"""Every refusal gives its own clear message, and none of them reads weights or runs remote code."""

from __future__ import annotations

import json

import pytest

from moe_core.real_models import Policy, RefusedError, load_model, loading, read_policy, route_text


def write_config(folder, **config) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_not_on_the_allow_list(tiny_models):
    with pytest.raises(RefusedError, match="not on this server's list of models .allowed: a/b"):
        load_model("someone/some-moe", Policy(allowed=("a/b",)))


def test_local_paths_are_off_by_default(tiny_models):
    with pytest.raises(RefusedError, match="Local folders are switched off on this server"):
        load_model(str(tiny_models["mixtral"]), Policy())
    with pytest.raises(RefusedError, match="Local folders are switched off"):
        load_model("/etc", Policy())


def test_with_local_paths_off_a_refusal_does_not_tell_which_folders_exist(tmp_path, monkeypatch):
    (tmp_path / "models" / "secret").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    messages = []
    for name in ("models/secret", "models/nothing"):  # an existing relative folder, and one that is not there
        with pytest.raises(RefusedError) as err:
            load_model(name, Policy(allowed=("a/b",)))
        messages.append(str(err.value).replace(name, "NAME"))
    assert messages[0] == messages[1]


def test_local_paths_when_allowed(tiny_models):
    m = load_model(str(tiny_models["olmoe"]), Policy(allow_local_paths=True))
    assert m.family.name == "OLMoE"
    with pytest.raises(RefusedError, match="There is no folder"):
        load_model("/no/such/folder", Policy(allow_local_paths=True))


def test_remote_code_is_refused(tmp_path):
    path = write_config(tmp_path / "custom", model_type="my_secret_moe", auto_map={"AutoModel": "modeling.MyMoE"})
    (tmp_path / "custom" / "modeling.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(RefusedError, match="needs its own Python code to run .trust_remote_code., which this server"):
        load_model(path, Policy(allowed=(path,)))


def test_not_an_moe_model(tmp_path):
    path = write_config(tmp_path / "dense", model_type="llama", hidden_size=32, num_hidden_layers=1)
    with pytest.raises(RefusedError, match="is not a Mixture-of-Experts model: it has no router to show"):
        load_model(path, Policy(allowed=(path,)))


def test_unsupported_moe_family_says_why(tmp_path):
    path = write_config(tmp_path / "switch", model_type="switch_transformers", num_experts=8)
    with pytest.raises(RefusedError, match="switch_transformers family is not supported here: an encoder-decoder"):
        load_model(path, Policy(allowed=(path,)))


def test_too_big_for_this_machine(tmp_path):
    """A Mixtral-shaped config of about 1 T parameters: refused from its config alone (no weights exist)."""
    path = write_config(tmp_path / "huge", model_type="mixtral", hidden_size=8192, intermediate_size=28672,
                        num_hidden_layers=56, num_local_experts=64, num_experts_per_tok=2, vocab_size=32000,
                        num_attention_heads=64, num_key_value_heads=8, dtype="bfloat16")
    assert loading.available_memory() < 2e12  # the precondition: this machine cannot hold 2 TB
    with pytest.raises(RefusedError, match=r"needs about [\d.]+ GB for its [\d.]+ B parameters in bfloat16, but "
                                           r"this machine has only [\d.]+ GB available"):
        load_model(path, Policy(allowed=(path,)))


def test_no_network_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(RefusedError) as err:
        load_model("nobody/not-cached-moe", Policy(allowed=("nobody/not-cached-moe",)))
    assert str(err.value) == ("'nobody/not-cached-moe' is not in this machine's model cache and HF_HUB_OFFLINE is "
                              "set, so it cannot be downloaded; download it once with network access.")


def test_text_limits(tiny_models, tiny_policy):
    m = load_model(str(tiny_models["mixtral"]), tiny_policy)
    with pytest.raises(RefusedError, match="The text has 31 characters; this server routes at most 30 at a time"):
        route_text(m, "x" * 31, max_chars=30)
    with pytest.raises(RefusedError, match="nothing to route"):
        route_text(m, "   ", max_chars=30)


def test_policy_file(tmp_path, monkeypatch):
    f = tmp_path / "p.toml"
    f.write_text('allowed = ["a/b", "/srv/models/x"]\nallow_local_paths = true\nmax_chars = 99\n')
    monkeypatch.setenv(loading.CONFIG_ENV, str(f))
    p = read_policy()
    assert p.allowed == ("a/b", "/srv/models/x") and p.allow_local_paths and p.max_chars == 99
    f.write_text("allowed = 3\n")
    with pytest.raises(ValueError, match="'allowed' must be a list"):
        read_policy()


def test_shipped_policy_keeps_local_paths_off():
    p = read_policy(loading.DEFAULT_CONFIG)
    assert not p.allow_local_paths and p.allowed and all("/" in a and not a.startswith("/") for a in p.allowed)


def test_download_progress_reaches_the_callback_without_a_terminal():
    """snapshot_download's bytes bar reports to the page's callback even when tqdm is disabled (a server)."""
    seen = []
    bar = loading.progress_class(lambda done, total: seen.append((done, total)))(
        name=loading.SNAPSHOT_BAR, total=0, disable=True, unit="B")
    bar.total = 100  # snapshot_download grows the total as it learns each file's size
    bar.update(40)
    bar.update(60)
    other = loading.progress_class(lambda done, total: seen.append("other"))(name="x", total=10, disable=True)
    other.update(5)
    assert seen == [(40, 100), (100, 100)]


def test_unreachable_hub_one_sentence(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE, but the Hub cannot be reached (a closed local port stands in for no network)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
                        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")  # refused at once
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda _s: None)  # skip its 5 retries' backoff
    with pytest.raises(RefusedError) as err:
        load_model("nobody/not-cached-moe", Policy(allowed=("nobody/not-cached-moe",)))
    assert str(err.value).startswith("'nobody/not-cached-moe' ")
    assert "cannot be reached" in str(err.value) or "could not be fetched" in str(err.value)
    assert str(err.value).count(". ") <= 1  # one sentence (two at most, the second saying what to do)
