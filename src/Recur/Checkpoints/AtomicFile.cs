namespace Recur.Checkpoints;

/// <summary>Writes that never leave a half-written file under the final name.</summary>
public static class AtomicFile
{
    /// <summary>Writes to <c>path.tmp-*</c> in the same folder, flushes to disk, then renames over <paramref name="path"/>.</summary>
    public static void Write(string path, Action<FileStream> write)
    {
        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(path)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, fs => { var b = System.Text.Encoding.UTF8.GetBytes(text); fs.Write(b); });
}
