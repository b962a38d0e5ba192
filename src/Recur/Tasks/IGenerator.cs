namespace Recur.Tasks;

/// <summary>
/// The model side of a generation task (GSM8K, MATH). Implemented by the engine; the tasks only build
/// prompts and score text, so they can be tested without a model.
/// </summary>
/// <remarks>
/// Expected semantics, as lm-evaluation-harness's HF backend (METHOD §8, <c>--model hf</c>):
/// <list type="bullet">
/// <item>greedy decoding; the prompt is tokenised with a leading BOS (eval.sh passes <c>add_bos_token=True</c>);</item>
/// <item>stop at the first occurrence of any of <c>stopSequences</c> or at the model's EOS, or after
/// <c>maxNewTokens</c> tokens (lm-eval's <c>max_gen_toks</c>, 256 by default);</item>
/// <item>return only the generated text, cut before the first stop sequence. Returning uncut text is
/// tolerated: every task cuts again with lm-eval's rule (<see cref="LmEval.CutAtStopSequences"/>);</item>
/// <item>one output per prompt, in order.</item>
/// </list>
/// </remarks>
public interface IGenerator
{
    IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, IReadOnlyList<string> stopSequences, int maxNewTokens);
}
