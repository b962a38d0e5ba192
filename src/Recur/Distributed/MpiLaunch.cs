namespace Recur.Distributed;

/// <summary>
/// What the environment says about how this process was started: by an MPI launcher (mpiexec, mpirun, srun)
/// as rank <see cref="Rank"/> of <see cref="Size"/>. Only a hint: MPI itself has the final word after MPI_Init,
/// and a disagreement between the two means the launcher and the library belong to different MPIs.
/// </summary>
public sealed record MpiLaunch(string Launcher, int Rank, int? Size, int? LocalRank)
{
    /// <summary>The launch this environment describes, or null when no launcher started the process.</summary>
    public static MpiLaunch? Detect(Func<string, string?> env)
    {
        int? Int(string name) => int.TryParse(env(name), out int v) ? v : null;

        // MPICH's Hydra (and Intel MPI) give every process PMI_RANK/PMI_SIZE, and MPI_LOCALRANKID on the node.
        if (Int("PMI_RANK") is { } pr)
            return new("mpiexec (PMI)", pr, Int("PMI_SIZE"), Int("MPI_LOCALRANKID"));
        // Open MPI's mpirun: its library has another ABI, so this mostly serves to explain a mismatch.
        if (Int("OMPI_COMM_WORLD_RANK") is { } or)
            return new("Open MPI mpirun", or, Int("OMPI_COMM_WORLD_SIZE"), Int("OMPI_COMM_WORLD_LOCAL_RANK"));
        if (Int("PMIX_RANK") is { } xr)
            return new("PMIx", xr, Int("OMPI_COMM_WORLD_SIZE") ?? Int("PMIX_SIZE"), Int("MPI_LOCALRANKID"));
        // srun sets SLURM_STEP_NUM_TASKS for the tasks it starts; a batch script also has SLURM_PROCID=0 and
        // SLURM_NTASKS but runs once, outside any step, so it must not count as a launch.
        if (Int("SLURM_STEP_NUM_TASKS") is { } sn && Int("SLURM_PROCID") is { } sr)
            return new("Slurm srun", sr, sn, Int("SLURM_LOCALID"));
        if (Int("MPI_LOCALRANKID") is { } lr)
            return new("mpiexec", lr, Int("MPI_LOCALNRANKS"), lr);
        return null;
    }

    public static MpiLaunch? FromEnvironment() => Detect(Environment.GetEnvironmentVariable);

    public override string ToString() => $"{Launcher}, rank {Rank}" + (Size is { } s ? $" of {s}" : "");
}
