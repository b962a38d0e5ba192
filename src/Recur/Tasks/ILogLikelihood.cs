namespace Recur.Tasks;

/// <summary>
/// The model side of a log-likelihood task (multiple choice, LAMBADA). Implemented by the engine.
/// </summary>
/// <remarks>
/// For each (context, continuation) pair return the summed log-probability of the continuation's tokens
/// given the context, and whether every continuation token is the argmax at its position ("is greedy").
/// To agree with lm-evaluation-harness (EleutherAI/lm-evaluation-harness:lm_eval/api/model.py,
/// <c>_encode_pair</c>): move trailing whitespace of the context onto the front of the continuation,
/// tokenise context+continuation as one string and take the continuation's tokens as the tail beyond the
/// context's tokens; prepend BOS. An empty context conditions on BOS alone. One result per request, in order.
/// </remarks>
public interface ILogLikelihood
{
    IReadOnlyList<(double LogProb, bool IsGreedy)> Score(IReadOnlyList<(string Context, string Continuation)> requests);
}
