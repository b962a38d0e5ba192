#!/usr/bin/env python3
"""Runs the Python modeling files that Recur writes into a recurrent model folder, without `transformers`.

Usage: /usr/bin/python3 check_remote_code.py MODEL_DIR CASES.safetensors
CASES holds `input_ids` [B, S] (I64), `s0` [B, S, h] and, for each T to check, `logits_T{T}` computed by Recur.
Prints one JSON line {"T1": max|diff|, "T4": ...}. Needs only PyTorch (Debian's python3-torch) and numpy.

The folder's raven_config_minimal.py / raven_modeling_minimal.py import a few `transformers` names; small
stand-ins for them are installed in sys.modules first (a config that stores its keys, a PreTrainedModel that is an
nn.Module holding the config, an empty GenerationMixin, an output record). Loading follows what
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` does: config class from config.json's
auto_map, model class from auto_map, weights by name (strict).
"""

import importlib
import json
import os
import shutil
import sys
import tempfile
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io as st  # noqa: E402


def install_transformers_stand_ins():
    tf = types.ModuleType("transformers")

    class PretrainedConfig:
        attribute_map = {}

        def __init__(self, **kwargs):
            self.tie_word_embeddings = kwargs.pop("tie_word_embeddings", True)
            for key, value in kwargs.items():
                setattr(self, key, value)

        def __setattr__(self, key, value):
            key = type(self).attribute_map.get(key, key)
            object.__setattr__(self, key, value)

        def __getattr__(self, key):
            mapped = type(self).attribute_map.get(key)
            if mapped is None:
                raise AttributeError(key)
            return getattr(self, mapped)

    class PreTrainedModel(torch.nn.Module):
        def __init__(self, config, *args, **kwargs):
            super().__init__()
            self.config = config

        def post_init(self):
            pass

    class GenerationMixin:
        pass

    outputs = types.ModuleType("transformers.modeling_outputs")

    class CausalLMOutputWithPast(dict):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.__dict__.update(kwargs)

    outputs.CausalLMOutputWithPast = CausalLMOutputWithPast
    tf.PretrainedConfig, tf.PreTrainedModel, tf.GenerationMixin = PretrainedConfig, PreTrainedModel, GenerationMixin
    tf.modeling_outputs = outputs
    sys.modules["transformers"] = tf
    sys.modules["transformers.modeling_outputs"] = outputs


def load(model_dir):
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    # The folder's .py files as a package, as transformers' dynamic module loader treats them.
    pkg_root = tempfile.mkdtemp(prefix="recur-remote-")
    pkg = os.path.join(pkg_root, "recur_remote")
    os.makedirs(pkg)
    open(os.path.join(pkg, "__init__.py"), "w").close()
    for name in os.listdir(model_dir):
        if name.endswith(".py"):
            shutil.copy(os.path.join(model_dir, name), pkg)
    sys.path.insert(0, pkg_root)

    def resolve(ref):
        module, cls = ref.rsplit(".", 1)
        return getattr(importlib.import_module("recur_remote." + module), cls)

    auto_map = cfg["auto_map"]
    config_cls, model_cls = resolve(auto_map["AutoConfig"]), resolve(auto_map["AutoModelForCausalLM"])
    assert resolve(auto_map["AutoModel"]) is not None
    assert config_cls.model_type == cfg["model_type"], (config_cls.model_type, cfg["model_type"])
    keys = {k: v for k, v in cfg.items() if k not in ("auto_map", "architectures", "model_type")}
    config = config_cls(**keys)
    model = model_cls(config)
    assert model_cls.__name__ in cfg["architectures"], (model_cls.__name__, cfg["architectures"])
    state = {}
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            state.update(st.load_file(os.path.join(model_dir, name))[0])
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.float().eval()


def main():
    torch.set_num_threads(1)
    install_transformers_stand_ins()
    model = load(sys.argv[1])
    cases, _ = st.load_file(sys.argv[2])
    ids, s0 = cases["input_ids"], cases["s0"].float()
    result = {}
    with torch.no_grad():
        for key in sorted(k for k in cases if k.startswith("logits_T")):
            t = int(key[len("logits_T"):])
            logits = model(input_ids=ids, num_steps=t, input_states=s0).logits
            result[f"T{t}"] = (logits.double() - cases[key].double()).abs().max().item()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
