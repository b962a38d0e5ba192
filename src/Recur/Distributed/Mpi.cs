// The few MPI calls data-parallel training needs, bound at run time to an MPICH-ABI library.
//
// TorchSharp has no torch.distributed (METHOD §10), so Recur talks to MPI directly. The library is opened with
// NativeLibrary rather than [DllImport] so that a machine without MPI never tries to load it: single-process
// runs do not depend on it at all. MPICH's ABI (libmpi.so.12: MPICH, Intel MPI, Cray MPICH, MVAPICH) uses
// plain int handles, so the predefined objects are integer constants. Open MPI's ABI differs (pointer handles)
// and is not supported.
//
// Every constant below is copied from MPICH 4.0.2's header, /usr/include/x86_64-linux-gnu/mpich/mpi.h
// (Debian package libmpich-dev), line numbers in the comments; the signatures are from mpi_proto.h beside it.
// The MPICH ABI initiative fixes these values across MPICH-derived implementations.
using System.Runtime.InteropServices;
using System.Text;

namespace Recur.Distributed;

/// <summary>An MPI call returned an error code.</summary>
public sealed class MpiException(string message) : Exception(message);

/// <summary>An MPICH-ABI MPI library loaded at run time, and the calls Recur makes into it.</summary>
public sealed unsafe class Mpi
{
    // mpi.h:279  #define MPI_COMM_WORLD ((MPI_Comm)0x44000000)
    public const int CommWorld = 0x44000000;
    // mpi.h:116  #define MPI_FLOAT ((MPI_Datatype)0x4c00040a)
    public const int Float = 0x4c00040a;
    // mpi.h:117  #define MPI_DOUBLE ((MPI_Datatype)0x4c00080b)
    public const int Double = 0x4c00080b;
    // mpi.h:226  #define MPI_INT64_T ((MPI_Datatype)0x4c00083a)
    public const int Int64 = 0x4c00083a;
    // mpi.h:305–307  MPI_MAX 0x58000001, MPI_MIN 0x58000002, MPI_SUM 0x58000003 (MPI_Op)
    public const int OpMax = 0x58000001;
    public const int OpMin = 0x58000002;
    public const int OpSum = 0x58000003;
    // mpi.h:542  #define MPI_IN_PLACE (void *) -1
    public static readonly void* InPlace = (void*)-1;
    // mpi.h:423  #define MPI_ERRORS_RETURN ((MPI_Errhandler)0x54000001)
    public const int ErrorsReturn = 0x54000001;
    // mpi.h:529  #define MPI_INFO_NULL ((MPI_Info)0x1c000000)
    public const int InfoNull = 0x1c000000;
    // mpi.h:552  #define MPI_COMM_TYPE_SHARED 1
    public const int CommTypeShared = 1;
    // mpi.h:805–808  MPI_THREAD_SINGLE 0, FUNNELED 1, SERIALIZED 2, MULTIPLE 3
    public const int ThreadFunneled = 1;
    // mpi.h:818  #define MPI_SUCCESS 0
    const int Success = 0;
    // mpi.h:356  #define MPI_MAX_ERROR_STRING 512
    const int MaxErrorString = 512;

    /// <summary>Library names tried in order: the MPICH ABI soname, the development symlink, Debian's own soname.</summary>
    public static readonly string[] Candidates = ["libmpi.so.12", "libmpi.so", "libmpich.so.12"];

    /// <summary>Environment variable naming the library file to load instead of <see cref="Candidates"/>.</summary>
    public const string LibraryVariable = "RECUR_MPI_LIBRARY";

    readonly delegate* unmanaged<int*, int> _initialized;
    readonly delegate* unmanaged<int*, int> _finalized;
    readonly delegate* unmanaged<int*, byte***, int, int*, int> _initThread;
    readonly delegate* unmanaged<int, int*, int> _commRank;
    readonly delegate* unmanaged<int, int*, int> _commSize;
    readonly delegate* unmanaged<int, int, int, int, int*, int> _commSplitType;
    readonly delegate* unmanaged<int*, int> _commFree;
    readonly delegate* unmanaged<int, int, int> _commSetErrhandler;
    readonly delegate* unmanaged<void*, void*, int, int, int, int, int> _allreduce;
    readonly delegate* unmanaged<int, int> _barrier;
    readonly delegate* unmanaged<int, int, int> _abort;
    readonly delegate* unmanaged<int> _finalize;
    readonly delegate* unmanaged<int, byte*, int*, int> _errorString;
    readonly delegate* unmanaged<byte*, int*, int> _libraryVersion;

    /// <summary>The file that was loaded.</summary>
    public string LibraryName { get; }

    Mpi(nint lib, string name)
    {
        LibraryName = name;
        nint F(string symbol) => NativeLibrary.GetExport(lib, symbol);
        _initialized = (delegate* unmanaged<int*, int>)F("MPI_Initialized");
        _finalized = (delegate* unmanaged<int*, int>)F("MPI_Finalized");
        _initThread = (delegate* unmanaged<int*, byte***, int, int*, int>)F("MPI_Init_thread");
        _commRank = (delegate* unmanaged<int, int*, int>)F("MPI_Comm_rank");
        _commSize = (delegate* unmanaged<int, int*, int>)F("MPI_Comm_size");
        _commSplitType = (delegate* unmanaged<int, int, int, int, int*, int>)F("MPI_Comm_split_type");
        _commFree = (delegate* unmanaged<int*, int>)F("MPI_Comm_free");
        _commSetErrhandler = (delegate* unmanaged<int, int, int>)F("MPI_Comm_set_errhandler");
        _allreduce = (delegate* unmanaged<void*, void*, int, int, int, int, int>)F("MPI_Allreduce");
        _barrier = (delegate* unmanaged<int, int>)F("MPI_Barrier");
        _abort = (delegate* unmanaged<int, int, int>)F("MPI_Abort");
        _finalize = (delegate* unmanaged<int>)F("MPI_Finalize");
        _errorString = (delegate* unmanaged<int, byte*, int*, int>)F("MPI_Error_string");
        _libraryVersion = (delegate* unmanaged<byte*, int*, int>)F("MPI_Get_library_version");
    }

    /// <summary>
    /// Opens the MPI library (<c>$RECUR_MPI_LIBRARY</c>, else the first of <see cref="Candidates"/> that loads).
    /// Returns null, with the reason, when none loads or one lacks an MPI symbol.
    /// </summary>
    public static Mpi? TryLoad(out string why)
    {
        var names = Environment.GetEnvironmentVariable(LibraryVariable) is { Length: > 0 } v ? [v] : Candidates;
        foreach (var name in names)
        {
            if (!NativeLibrary.TryLoad(name, out var lib)) continue;
            try
            {
                why = "";
                return new Mpi(lib, name);
            }
            catch (EntryPointNotFoundException e)
            {
                why = $"{name} is not an MPI library ({e.Message})";
                return null;
            }
        }
        why = $"no MPI library found (tried {string.Join(", ", names)}; install MPICH: apt-get install mpich)";
        return null;
    }

    void Check(int code, string call)
    {
        if (code == Success) return;
        var buf = stackalloc byte[MaxErrorString + 1];
        int len = 0;
        string text = _errorString(code, buf, &len) == Success ? Encoding.ASCII.GetString(buf, Math.Clamp(len, 0, MaxErrorString)) : $"error code {code}";
        throw new MpiException($"{call} failed: {text}");
    }

    public bool Initialized { get { int f = 0; Check(_initialized(&f), "MPI_Initialized"); return f != 0; } }
    public bool Finalized { get { int f = 0; Check(_finalized(&f), "MPI_Finalized"); return f != 0; } }

    /// <summary>
    /// MPI_Init_thread with FUNNELED (only the main thread calls MPI; libtorch's own threads never do), then
    /// MPI_ERRORS_RETURN on MPI_COMM_WORLD so that a failed call becomes an <see cref="MpiException"/> with
    /// MPI's message instead of an abort deep inside the library. Returns the thread level provided.
    /// </summary>
    public int Init()
    {
        int provided = 0;
        Check(_initThread(null, null, ThreadFunneled, &provided), "MPI_Init_thread");
        Check(_commSetErrhandler(CommWorld, ErrorsReturn), "MPI_Comm_set_errhandler");
        return provided;
    }

    public int Rank { get { int r = 0; Check(_commRank(CommWorld, &r), "MPI_Comm_rank"); return r; } }
    public int Size { get { int s = 0; Check(_commSize(CommWorld, &s), "MPI_Comm_size"); return s; } }

    /// <summary>Processes that share this node's memory (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED): the local ranks.</summary>
    public int LocalSize()
    {
        int comm = 0, size = 0;
        Check(_commSplitType(CommWorld, CommTypeShared, 0, InfoNull, &comm), "MPI_Comm_split_type");
        try { Check(_commSize(comm, &size), "MPI_Comm_size"); }
        finally { _commFree(&comm); }
        return size;
    }

    /// <summary>MPI_Allreduce in place over MPI_COMM_WORLD on <paramref name="count"/> elements at <paramref name="buffer"/>.</summary>
    public void AllReduceInPlace(void* buffer, int count, int datatype, int op) =>
        Check(_allreduce(InPlace, buffer, count, datatype, op, CommWorld), "MPI_Allreduce");

    public void Barrier() => Check(_barrier(CommWorld), "MPI_Barrier");

    /// <summary>Asks the launcher to kill every process of the job with <paramref name="code"/>; does not return on success.</summary>
    public void Abort(int code) => _abort(CommWorld, code);

    /// <summary>MPI_Finalize (named so to keep clear of C#'s destructor method).</summary>
    public void FinalizeMpi() => Check(_finalize(), "MPI_Finalize");

    /// <summary>MPI_Get_library_version's first line, e.g. "MPICH Version: 4.0.2".</summary>
    public string Version
    {
        get
        {
            // mpi.h:355  #define MPI_MAX_LIBRARY_VERSION_STRING 8192
            var buf = new byte[8192];
            int len = 0;
            fixed (byte* p = buf) if (_libraryVersion(p, &len) != Success) return "unknown";
            return Encoding.ASCII.GetString(buf, 0, Math.Clamp(len, 0, buf.Length)).Split('\n')[0].Trim('\0', ' ', '\t');
        }
    }
}
