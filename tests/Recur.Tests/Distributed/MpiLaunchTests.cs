using Recur.Distributed;
using Xunit;

namespace Recur.Tests.Distributed;

public class MpiLaunchTests
{
    static MpiLaunch? Detect(params (string, string)[] vars)
    {
        var env = vars.ToDictionary(v => v.Item1, v => v.Item2);
        return MpiLaunch.Detect(k => env.GetValueOrDefault(k));
    }

    [Fact]
    public void Hydra_Open_MPI_and_srun_launches_are_recognised()
    {
        Assert.Equal(new MpiLaunch("mpiexec (PMI)", 1, 2, 1), Detect(("PMI_RANK", "1"), ("PMI_SIZE", "2"), ("MPI_LOCALRANKID", "1")));
        Assert.Equal(new MpiLaunch("Open MPI mpirun", 3, 4, 1), Detect(("OMPI_COMM_WORLD_RANK", "3"), ("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1")));
        Assert.Equal(new MpiLaunch("Slurm srun", 5, 8, 1), Detect(("SLURM_PROCID", "5"), ("SLURM_STEP_NUM_TASKS", "8"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "1")));
        Assert.Equal(new MpiLaunch("PMIx", 2, null, null), Detect(("PMIX_RANK", "2")));
    }

    [Fact]
    public void A_plain_shell_or_a_Slurm_batch_script_is_not_a_launch()
    {
        Assert.Null(Detect());
        // sbatch runs the script once with SLURM_PROCID=0 and SLURM_NTASKS=N, outside any srun step.
        Assert.Null(Detect(("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4"), ("SLURM_JOB_ID", "17")));
        Assert.Null(Detect(("PMI_RANK", "not a number")));
    }
}
