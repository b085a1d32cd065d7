"""Sharing models (hunt 16): weights that do not fit their config.json, remote code that imports a file the folder
lacks, pushes to an existing public repo with --private and over an earlier push, diffusers VQModel folders written
by an older diffusers, and Hub repos that refuse a model named as unreachable."""

import json
import shutil
import types

import httpx2
import pytest
import torch
from diffusers import VQModel
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import RepositoryNotFoundError

from hf_specdec import VQGPTForCausalLM
from hf_specdec.hub import load_pretrained, model_card, push_model, upload_plan
from hf_specdec.models import VQGPTModel, VQTokenizer
from tests.utils import CHECKPOINTS, random_images, script_main, tiny_model


@pytest.mark.parametrize("layers", [3, 1])
def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, layers):
    tiny_model().save_pretrained(tmp_path)  # 2 layers
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
    # 3: a block initialised at random (a printed report only); 1: the second block dropped
    with pytest.raises(ValueError, match="do not fit its config.json: (missing|unexpected) transformer.h"):
        VQGPTForCausalLM.from_pretrained(tmp_path)


def test_the_trunk_still_loads_from_a_causal_lm_folder(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    trunk, info = VQGPTModel.from_pretrained(tmp_path, output_loading_info=True)  # the head is expected to be left out
    assert info["unexpected_keys"] == {"lm_head.weight"} and not info["missing_keys"]
    assert torch.equal(trunk.wte.weight, model.transformer.wte.weight)


def test_upload_plan_follows_the_remote_codes_imports(tmp_path):
    folder = tmp_path / "teacher"
    shutil.copytree(CHECKPOINTS / "teacher", folder)
    (folder / "generation_vqgpt.py").unlink()  # modeling_vqgpt.py imports it: trust_remote_code failed on the Hub
    with pytest.raises(ValueError, match=r"imports \['generation_vqgpt.py'\], which the folder lacks"):
        upload_plan(str(folder))


class FakeHub:
    """HfApi's repo calls on a dict of repos; a repo that exists keeps its visibility, as on the Hub."""

    def __init__(self, monkeypatch, repos):
        self.repos, self.commits = repos, []
        hub = self

        def create_repo(api, repo_id, private=False, exist_ok=False, **kwargs):
            hub.repos.setdefault(repo_id, {"private": private, "files": [".gitattributes"]})
            return f"https://huggingface.co/{repo_id}"

        def create_commit(api, repo_id, operations, **kwargs):
            added = {o.path_in_repo for o in operations if type(o).__name__ == "CommitOperationAdd"}
            deleted = {o.path_in_repo for o in operations if type(o).__name__ == "CommitOperationDelete"}
            hub.commits.append((repo_id, sorted(added), sorted(deleted)))
            hub.repos[repo_id]["files"] = sorted((set(hub.repos[repo_id]["files"]) - deleted) | added)

        def upload_folder(api, repo_id, folder_path, allow_patterns=None, **kwargs):  # the old path, for the record
            hub.commits.append((repo_id, sorted(allow_patterns), []))
            hub.repos[repo_id]["files"] = sorted(set(hub.repos[repo_id]["files"]) | set(allow_patterns))

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        def repo_info(api, repo_id, **kwargs):
            if repo_id not in hub.repos:
                response = httpx2.Response(404, request=httpx2.Request("GET", "https://hub"))
                raise RepositoryNotFoundError(repo_id, response=response)
            return types.SimpleNamespace(private=hub.repos[repo_id]["private"])

        monkeypatch.setattr(HfApi, "repo_info", repo_info)
        monkeypatch.setattr(HfApi, "list_repo_files", lambda api, repo_id, **k: list(hub.repos[repo_id]["files"]))
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        monkeypatch.setattr(HfApi, "upload_file", lambda api, **kwargs: hub.repos[kwargs["repo_id"]]["files"].append(
            kwargs["path_in_repo"]))
        monkeypatch.setattr(ModelCard, "validate", lambda card, *a, **k: None)


def test_private_push_to_an_existing_public_repo_is_refused(monkeypatch):
    hub = FakeHub(monkeypatch, {"me/teacher": {"private": False, "files": [".gitattributes", "README.md"]}})
    folder = str(CHECKPOINTS / "teacher")
    with pytest.raises(ValueError, match="exists and is public"):  # create_repo(exist_ok=True) kept it public
        push_model(folder, "me/teacher", model_card(folder, "me/teacher"), private=True)
    assert not hub.commits
    push_model(folder, "me/new", model_card(folder, "me/new"), private=True)  # a new repo is made private
    assert hub.repos["me/new"]["private"] and "model.safetensors" in hub.repos["me/new"]["files"]


def test_a_private_push_of_a_set_checks_every_repo_before_the_first_upload(monkeypatch):
    """`push_model` refused a public repo at its turn: the teachers and tokenizer pushed before it were uploaded."""
    from hf_specdec.cli import UsageError

    hub = FakeHub(monkeypatch, {"me/digits-draft-2L": {"private": False, "files": [".gitattributes"]}})
    words = r"`private`: \['me/digits-draft-2L'\] exist and are public.*nothing was uploaded"
    with pytest.raises(UsageError, match=words):
        script_main("push_to_hub.py")(["--namespace", "me", "--private", "--checkpoints_dir", str(CHECKPOINTS)])
    assert not hub.commits and list(hub.repos) == ["me/digits-draft-2L"]


def test_a_push_replaces_the_files_of_an_earlier_push(monkeypatch):
    earlier = [".gitattributes", "README.md", "config.json", "model.safetensors", "samples.md"]
    hub = FakeHub(monkeypatch, {"me/draft": {"private": False, "files": earlier}})
    folder = CHECKPOINTS / "draft-1L"
    sharded = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"}
    hub.repos["me/draft"]["files"] += sorted(sharded)  # an earlier push saved sharded
    push_model(str(folder), "me/draft", model_card(str(folder), "me/draft"))
    files = set(hub.repos["me/draft"]["files"])
    assert not files & sharded  # transformers read the stale index's shards or the stale single file, not this push
    assert set(upload_plan(str(folder))) <= files and "samples.md" in files  # files of other kinds are left alone
    assert len(hub.commits) == 1  # card and weights in one commit


def _tiny_vqmodel_folder(path):
    torch.manual_seed(0)
    vq = VQModel(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=8, num_vq_embeddings=16).eval()
    vq.save_pretrained(path)
    images = random_images(2)
    return vq.quantize(vq.encode(images).latents)[2][2].reshape(2, 16, 16), images


def test_a_diffusers_vqmodel_folder_gives_its_own_codes(tmp_path):
    codes, images = _tiny_vqmodel_folder(tmp_path)  # VQModel's defaults: lookup_from_codebook False, attention on
    assert torch.equal(VQTokenizer.from_pretrained(tmp_path).encode_to_indices(images), codes)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("mid_block_add_attention", "lookup_from_codebook", "force_upcast", "norm_type"):
        config.pop(key)  # as diffusers wrote it before these existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert torch.equal(VQModel.from_pretrained(tmp_path).quantize(VQModel.from_pretrained(tmp_path).encode(
        images).latents)[2][2].reshape(2, 16, 16), codes)
    tokenizer = VQTokenizer.from_pretrained(tmp_path)  # took this class's default: attention off, weights dropped
    assert tokenizer.config.mid_block_add_attention and torch.equal(tokenizer.encode_to_indices(images), codes)
    with pytest.raises(ValueError, match="has no place for: decoder.mid_block.attentions"):
        VQTokenizer.from_pretrained(tmp_path, mid_block_add_attention=False)


def test_a_hub_repo_that_refuses_the_model_says_why(monkeypatch):
    def refuse(name, **kwargs):
        raise ValueError("`teacher` has codebook_size=256, this draft was made for 32.")

    monkeypatch.setattr(VQGPTForCausalLM, "from_pretrained", staticmethod(refuse))
    with pytest.raises(ValueError, match="Hub repo that holds no VQGPTForCausalLM .*codebook_size=256"):
        load_pretrained(VQGPTForCausalLM, "org/feature-draft", "draft")  # was: 'neither ... nor a reachable Hub repo id'
