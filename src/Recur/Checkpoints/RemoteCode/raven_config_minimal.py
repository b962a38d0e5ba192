"""Configuration of a Recur recurrent model (Raven/Huginn layout) for Hugging Face `trust_remote_code`.

Written by Recur into every recurrent model folder it saves; docs/checkpoints.md of the Recur
repository lists each key, its default and its meaning. Absent keys take the defaults of the
paper's `RavenConfig`, so folders from either side mean the same thing.
"""

from math import sqrt

from transformers import PretrainedConfig


class RavenConfig(PretrainedConfig):
    model_type = "huginn_raven"
    attribute_map = {"hidden_size": "n_embd", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}

    def __init__(
        self,
        n_embd=5280,
        n_heads=55,
        n_layers=8,
        n_layers_in_prelude=2,
        n_layers_in_recurrent_block=4,
        n_layers_in_coda=2,
        intermediate_size=17920,
        vocab_size=65536,
        block_size=4096,
        norm_eps=1e-6,
        tie_embeddings=True,
        qk_bias=True,
        bias=False,
        injection_type="linear",
        state_init="like-init",
        sampling_scheme="poisson-lognormal-filling",
        mean_recurrence=32,
        mean_backprop_depth=8,
        rope_base=50000.0,
        block_type="llama",
        test_time_noise=0.0,
        test_time_noise_type="fixed",
        **kwargs,
    ):
        self.n_embd = n_embd
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.n_layers_in_prelude = n_layers_in_prelude
        self.n_layers_in_recurrent_block = n_layers_in_recurrent_block
        self.n_layers_in_coda = n_layers_in_coda
        self.intermediate_size = intermediate_size
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.norm_eps = norm_eps
        self.tie_embeddings = tie_embeddings
        self.qk_bias = qk_bias
        self.bias = bias
        self.injection_type = injection_type
        self.state_init = state_init
        self.sampling_scheme = sampling_scheme
        self.mean_recurrence = mean_recurrence
        self.mean_backprop_depth = mean_backprop_depth
        self.rope_base = rope_base
        self.block_type = block_type
        self.test_time_noise = test_time_noise
        self.test_time_noise_type = test_time_noise_type
        # Values derived from the arguments; a key given in config.json replaces them whole.
        self.num_key_value_heads = kwargs.pop("num_key_value_heads", n_heads)
        self.head_dim = kwargs.pop("head_dim", n_embd // n_heads)
        self.padded_vocab_size = kwargs.pop("padded_vocab_size", vocab_size)
        self.init_values = kwargs.pop("init_values", {"std": sqrt(2 / (5 * n_embd)), "embed_scale": sqrt(n_embd)})
        # The head follows tie_embeddings; a stray tie_word_embeddings key must not clash with it.
        kwargs.pop("tie_word_embeddings", None)
        super().__init__(tie_word_embeddings=tie_embeddings, **kwargs)
