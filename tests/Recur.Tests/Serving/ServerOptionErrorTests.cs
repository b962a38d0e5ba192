using Recur.Cli;
using Recur.Engine;
using Recur.Serving;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Serving;

/// <summary>The server is a library type: its errors name <see cref="ServerOptions"/> properties, and <c>recur serve</c> shows its flags.</summary>
public sealed class ServerOptionErrorTests
{
    static void NamesTheOption(RecurUserException e, string parameter, string cli)
    {
        Assert.Contains(parameter, e.Message);
        Assert.DoesNotContain("--", e.Message);
        Assert.Contains(parameter, e.Parameters);
        Assert.Contains(cli, Common.Describe(e));
        Assert.DoesNotContain(parameter, Common.Describe(e));
    }

    [Theory]
    [InlineData(70000, "127.0.0.1", "ServerOptions.Port", "--port must be between 0 and 65535 (got 70000)")]
    [InlineData(0, "not-an-address", "ServerOptions.Host", "--host must be an IP address, localhost or 0.0.0.0 (got 'not-an-address')")]
    public void Bad_host_or_port_names_the_property(int port, string host, string parameter, string cli)
    {
        using var m = RecurModel.Load(ChatModels.Plain(seed: 31));
        using var server = new OpenAiServer(new ModelRunner(m.Model, m.Tokenizer!), ChatTemplate.Plain, new ServerOptions { Host = host, Port = port });
        NamesTheOption(Assert.Throws<RecurUserException>(server.Start), parameter, cli);
    }

    [Fact]
    public void A_batch_of_zero_names_the_property()
    {
        using var m = RecurModel.Load(ChatModels.Plain(seed: 31));
        var e = Assert.Throws<RecurUserException>(() => new ModelWorker(new ModelRunner(m.Model, m.Tokenizer!), maxBatch: 0));
        NamesTheOption(e, "ServerOptions.MaxBatch", "--max-batch must be ≥ 1 (got 0)");
    }
}
