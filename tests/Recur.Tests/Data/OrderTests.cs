using Recur.Data;
using Xunit;
using static Recur.Tests.Data.DataTestKit;

namespace Recur.Tests.Data;

/// <summary>Row order, validation split, mixtures, resumable cursors and rank sharding.</summary>
public sealed class OrderTests : IDisposable
{
    private readonly DataTestKit _kit = new();

    public void Dispose() => _kit.Dispose();

    private PackedDataset Open(DataSpec spec)
    {
        var tok = _kit.LoadTokenizer();
        try { return PackedDataset.Open(spec, tok, _kit.Cache); }
        finally { tok.Dispose(); }
    }

    // 400 short documents, rows of 9 tokens: about a hundred rows.
    private string Corpus(string name = "a.jsonl", ulong seed = 7, int docs = 400) =>
        _kit.WriteRandomJsonl(name, docs, maxWords: 3, seed: seed);

    private static List<RowRef> Take(DataLoader loader, int batches) =>
        [.. Enumerable.Range(0, batches).SelectMany(_ => loader.NextRows().RowRefs)];

    [Fact]
    public void SplitMix64_matches_the_reference_sequence()
    {
        // Outputs of Steele et al.'s splitmix64 from state 0 (computed with the published algorithm in Python).
        var rng = new SplitMix64(0);
        Assert.Equal(0xE220A8397B1DCDAFUL, rng.Next());
        Assert.Equal(0x6E789E6AA1B965F4UL, rng.Next());
        Assert.Equal(0x06C45D188009454FUL, rng.Next());
        var resumed = new SplitMix64(rng.State);
        Assert.Equal(rng.Next(), resumed.Next());
    }

    [Fact]
    public void Bounded_draws_are_in_range_and_roughly_uniform()
    {
        var rng = new SplitMix64(42);
        var counts = new int[7];
        for (int i = 0; i < 70_000; i++) counts[rng.NextBelow(7)]++;
        Assert.All(counts, c => Assert.InRange(c, 9_500, 10_500));   // ±5σ ≈ ±470
    }

    [Fact]
    public void Order_is_determined_by_the_seed()
    {
        string path = Corpus();
        var spec = Spec(8, path);
        using var a = Open(spec);
        using var b = Open(spec);
        using var c = Open(spec with { Seed = spec.Seed + 1 });
        var ra = Take(a.Train(8), 5);
        Assert.Equal(ra, Take(b.Train(8), 5));
        Assert.NotEqual(ra, Take(c.Train(8), 5));
        Assert.NotEqual(ra.Select(r => r.Row), ra.Select(r => r.Row).Order());   // shuffled, not file order
    }

    [Fact]
    public void Each_epoch_visits_every_training_row_once_in_a_new_order()
    {
        using var data = Open(Spec(8, Corpus()));
        int n = (int)data.Sources[0].TrainRows;
        var loader = data.Train(1);
        var e0 = Take(loader, n).Select(r => r.Row).ToList();
        var e1 = Take(loader, n).Select(r => r.Row).ToList();
        Assert.Equal(Enumerable.Range(0, n).Select(i => (long)i), e0.Order());
        Assert.Equal(Enumerable.Range(0, n).Select(i => (long)i), e1.Order());
        Assert.NotEqual(e0, e1);
        Assert.Equal(2, loader.Cursor.Sources[0].Epoch);
        Assert.Equal(0, loader.Cursor.Sources[0].Position);
    }

    [Fact]
    public void Validation_rows_are_the_tail_and_never_in_training()
    {
        string path = Corpus();
        using var data = Open(Spec(8, path) with { ValFraction = 0.1 });
        var s = data.Sources[0];
        Assert.Equal((long)Math.Round(s.Rows * 0.1, MidpointRounding.AwayFromZero), s.ValRows);
        Assert.True(s.ValRows > 0);
        var val = data.ValidationRows().Select(r => r.Row).ToHashSet();
        Assert.Equal(Enumerable.Range((int)s.TrainRows, (int)s.ValRows).Select(i => (long)i), val.Order());
        var train = Take(data.Train(4), (int)(3 * s.TrainRows / 4)).Select(r => r.Row).ToHashSet();   // three epochs
        Assert.Empty(train.Intersect(val));
        Assert.Equal(s.TrainRows, train.Count);

        // The split does not depend on the seed, and a row count works too.
        using var other = Open(Spec(8, path) with { ValFraction = 0.1, Seed = 99 });
        Assert.Equal(val, other.ValidationRows().Select(r => r.Row).ToHashSet());
        using var counted = Open(Spec(8, path) with { ValRows = 3 });
        Assert.Equal(3, counted.ValRows);

        var batches = data.ValidationBatches(4).ToList();
        Assert.Equal(s.ValRows, batches.Sum(b => b.Rows));
        Assert.Equal(data.ValidationRows(), batches.SelectMany(b => b.RowRefs));
    }

    [Fact]
    public void A_split_that_leaves_no_training_row_is_an_error()
    {
        string path = _kit.WriteJsonl("tiny.jsonl", [Words(1, 2)]);
        var e = Assert.Throws<RecurUserException>(() => Open(Spec(8, path) with { ValFraction = 0.01 }));
        Assert.Contains("no training row", e.Message);
        Assert.Contains("tiny.jsonl", e.Message);
    }

    [Fact]
    public void Mixture_draws_rows_in_proportion_to_the_weights()
    {
        string a = Corpus("a.jsonl", 1, 100), b = Corpus("b.jsonl", 2, 300), c = Corpus("c.jsonl", 3, 200);
        double[] w = [1, 2, 5];
        var spec = Spec(8, a, b, c) with { Sources = [.. Spec(8, a, b, c).Sources.Select((s, i) => s with { Weight = w[i] })] };
        using var data = Open(spec);
        var loader = data.Train(16);
        var counts = new long[3];
        for (int batch = 0; batch < 100; batch++)
        {
            foreach (var r in loader.NextRows().RowRefs) counts[r.Source]++;
            long n = (batch + 1) * 16;
            for (int s = 0; s < 3; s++)
            {
                // Deterministic interleaving: within one row above and (sources − 1) rows below n·w_s at every batch.
                double target = n * w[s] / w.Sum();
                Assert.InRange(counts[s], target - 2, target + 1);
            }
        }
        Assert.Equal([200L, 400L, 1000L], counts);
        // Small sources are repeated: a has fewer rows than it was asked for.
        Assert.True(loader.Cursor.Sources[0].Epoch >= 1);
    }

    [Fact]
    public void Mixture_proportions_hold_for_uneven_weights()
    {
        string a = Corpus("a.jsonl", 1, 100), b = Corpus("b.jsonl", 2, 100);
        var spec = Spec(8, a, b);
        spec = spec with { Sources = [spec.Sources[0] with { Weight = 0.3 }, spec.Sources[1] with { Weight = 0.7 / 3 }] };
        using var data = Open(spec);
        var loader = data.Train(10);
        var refs = Take(loader, 300);
        double share = refs.Count(r => r.Source == 0) / (double)refs.Count;
        // Within one row of the target count for two sources.
        double expected = 0.3 / (0.3 + 0.7 / 3);
        Assert.InRange(share, expected - 1.0 / refs.Count, expected + 1.0 / refs.Count);
    }

    [Fact]
    public void A_restored_cursor_replays_the_same_batches()
    {
        string a = Corpus("a.jsonl", 1, 150), b = Corpus("b.jsonl", 2, 150);
        var spec = Spec(8, a, b) with { ValRows = 2 };
        spec = spec with { Sources = [spec.Sources[0], spec.Sources[1] with { Weight = 3 }] };
        using var data = Open(spec);
        var original = data.Train(6);
        Take(original, 17);                       // enough to cross epoch boundaries
        string saved = original.Cursor.ToJson();
        var expected = Enumerable.Range(0, 20).Select(_ => original.NextRows()).ToList();

        using var reopened = Open(spec);
        var resumed = reopened.Train(6, resume: DataCursor.FromJson(saved));
        Assert.Equal(saved, reopened.Train(6, resume: DataCursor.FromJson(saved)).Cursor.ToJson());
        foreach (var batch in expected)
        {
            var got = resumed.NextRows();
            Assert.Equal(batch.RowRefs, got.RowRefs);
            Assert.Equal(batch.Inputs, got.Inputs);
            Assert.Equal(batch.Labels, got.Labels);
        }
        Assert.Equal(original.Cursor.ToJson(), resumed.Cursor.ToJson());

        // Touching a source rebuilds its cache, but the tokens are the same, so the cursor still fits.
        File.SetLastWriteTimeUtc(a, File.GetLastWriteTimeUtc(a).AddMinutes(1));
        using var rebuilt = Open(spec);
        Assert.True(rebuilt.Sources[0].Built);
        Assert.Equal(expected[0].RowRefs, rebuilt.Train(6, resume: DataCursor.FromJson(saved)).NextRows().RowRefs);
    }

    [Fact]
    public void Skipping_batches_equals_reading_them()
    {
        string a = Corpus("a.jsonl", 1, 150), b = Corpus("b.jsonl", 2, 90);
        using var data = Open(Spec(8, a, b));
        var read = data.Train(5);
        Take(read, 23);
        var skipped = data.Train(5);
        skipped.Skip(23);
        Assert.Equal(read.Cursor.ToJson(), skipped.Cursor.ToJson());
        Assert.Equal(read.NextRows().RowRefs, skipped.NextRows().RowRefs);

        using var single = Open(Spec(8, a));
        var r1 = single.Train(5);
        Take(r1, 40);
        var s1 = single.Train(5);
        s1.Skip(40);
        Assert.Equal(r1.NextRows().RowRefs, s1.NextRows().RowRefs);
    }

    [Fact]
    public void Two_ranks_read_the_two_halves_of_one_rank_batches()
    {
        string a = Corpus("a.jsonl", 1, 150), b = Corpus("b.jsonl", 2, 150);
        using var data = Open(Spec(8, a, b));
        var one = data.Train(8);
        var r0 = data.Train(8, rank: 0, worldSize: 2);
        var r1 = data.Train(8, rank: 1, worldSize: 2);
        Assert.Equal(4, r0.LocalBatchSize);
        for (int i = 0; i < 30; i++)
        {
            var full = one.NextRows();
            var h0 = r0.NextRows();
            var h1 = r1.NextRows();
            Assert.Equal(full.Inputs, h0.Inputs.Concat(h1.Inputs));
            Assert.Equal(full.Labels, h0.Labels.Concat(h1.Labels));
            Assert.Equal(full.RowRefs, h0.RowRefs.Concat(h1.RowRefs));
        }
        Assert.Equal(one.Cursor.ToJson(), r0.Cursor.ToJson());
        Assert.Equal(one.Cursor.ToJson(), r1.Cursor.ToJson());

        var v = data.ValidationBatches(8).ToList();
        var v0 = data.ValidationBatches(8, 0, 2).ToList();
        var v1 = data.ValidationBatches(8, 1, 2).ToList();
        Assert.Equal(v.SelectMany(x => x.RowRefs), v0.Zip(v1).SelectMany(p => p.First.RowRefs.Concat(p.Second.RowRefs)));
    }

    [Fact]
    public void Bad_sharding_and_foreign_cursors_are_errors()
    {
        string a = Corpus("a.jsonl", 1, 100);
        using var data = Open(Spec(8, a));
        Assert.Throws<RecurUserException>(() => data.Train(6, rank: 0, worldSize: 4));
        Assert.Throws<RecurUserException>(() => data.Train(4, rank: 2, worldSize: 2));
        Assert.Throws<RecurUserException>(() => data.Train(0));

        var loader = data.Train(4);
        loader.NextRows();
        var cursor = loader.Cursor;
        using var reseeded = Open(Spec(8, a) with { Seed = 5 });
        var e = Assert.Throws<RecurUserException>(() => reseeded.Train(4, resume: cursor));
        Assert.Contains("start a fresh cursor", e.Message);
        var broken = cursor with { Rows = cursor.Rows + 1 };
        Assert.Throws<RecurUserException>(() => data.Train(4, resume: broken));
        Assert.Throws<RecurUserException>(() => DataCursor.FromJson("{\"rows\": 1, \"typo\": 2}"));
    }
}
