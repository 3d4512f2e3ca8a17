// LaunchPlanTests: the job contract a child process sees (argv, SPOOL_* environment,
// working directory) and the output-name checks that keep downloads inside outputs/.

import Testing
import SpoolCore

@Suite struct LaunchPlanTests {
    let id = JobID.random()

    func job(attempts: Int = 1) -> Job {
        var job = Job(id: id, type: "render", input: .object(["size": .int(64)]), priority: 0,
                      timeoutSeconds: 10, maxAttempts: 2, createdAt: Timestamp(microseconds: 0))
        job.attempts = attempts
        return job
    }

    func type(environment: [String: String] = [:], workingDirectory: String? = nil) throws -> JobType {
        JobType(name: "render", command: try CommandTemplate(["render", "--size={input.size}"]),
                environment: environment, workingDirectory: workingDirectory)
    }

    @Test func environmentCarriesTheJobContract() throws {
        let paths = JobPaths(dataDirectory: "/data", job: id)
        let plan = try LaunchPlan(job: job(attempts: 2), type: type(), slot: SlotSpec(id: SlotID(3), gpu: "1"), paths: paths)
        #expect(plan.argv == ["render", "--size=64"])
        let env = plan.environment
        #expect(env["SPOOL_JOB_ID"] == id.rawValue)
        #expect(env["SPOOL_JOB_TYPE"] == "render")
        #expect(env["SPOOL_INPUT_FILE"] == "/data/jobs/\(id)/input.json")
        #expect(env["SPOOL_OUTPUT_DIR"] == "/data/jobs/\(id)/outputs")
        #expect(env["SPOOL_MESSAGES"] == "/data/jobs/\(id)/messages")
        #expect(env["SPOOL_SLOT"] == "3")
        #expect(env["SPOOL_PROTOCOL"] == LaunchPlan.protocolVersion)
        #expect(env["SPOOL_ATTEMPT"] == "2")
        #expect(env["CUDA_VISIBLE_DEVICES"] == "1")
        #expect(env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID", "CUDA counts the GPUs as nvidia-smi does")
    }

    @Test func cpuSlotGetsNoCUDAVisibleDevices() throws {
        let plan = try LaunchPlan(job: job(), type: type(), slot: SlotSpec(id: SlotID(0)),
                                  paths: JobPaths(dataDirectory: "/data", job: id))
        #expect(plan.environment["CUDA_VISIBLE_DEVICES"] == nil && plan.environment["CUDA_DEVICE_ORDER"] == nil)
        #expect(plan.environment["SPOOL_SLOT"] == "0")
    }

    @Test func typeEnvironmentIsIncludedButCannotOverrideTheContract() throws {
        let type = try type(environment: ["MODEL": "small", "SPOOL_JOB_ID": "forged", "SPOOL_PROTOCOL": "9"])
        let plan = try LaunchPlan(job: job(), type: type, slot: SlotSpec(id: SlotID(0)),
                                  paths: JobPaths(dataDirectory: "/data", job: id))
        #expect(plan.environment["MODEL"] == "small")
        #expect(plan.environment["SPOOL_JOB_ID"] == id.rawValue)
        #expect(plan.environment["SPOOL_PROTOCOL"] == LaunchPlan.protocolVersion)
    }

    /// A warm worker on a GPU slot is pinned as a job is, and its type cannot set another device
    /// order (its index would then name another card than the one the server watches).
    @Test func aWorkerOnAGPUSlotIsPinnedAsAJobIs() throws {
        func worker(_ environment: [String: String] = [:]) throws -> JobType {
            JobType(name: "embed", command: try CommandTemplate(["python3", "worker.py"]), environment: environment)
        }
        let plan = try WorkerLaunchPlan(type: try worker(["CUDA_DEVICE_ORDER": "FASTEST_FIRST", "MODEL": "small"]), policy: WorkerPolicy(),
                                        slot: SlotSpec(id: SlotID(2), gpu: "1"), workerID: "w1", directory: "/data/workers/w1")
        #expect(plan.environment["CUDA_VISIBLE_DEVICES"] == "1" && plan.environment["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID")
        #expect(plan.environment["MODEL"] == "small" && plan.environment["SPOOL_SLOT"] == "2")
        let cpu = try WorkerLaunchPlan(type: try worker(), policy: WorkerPolicy(), slot: SlotSpec(id: SlotID(0)),
                                       workerID: "w2", directory: "/data/workers/w2")
        #expect(cpu.environment["CUDA_VISIBLE_DEVICES"] == nil && cpu.environment["CUDA_DEVICE_ORDER"] == nil)
    }

    @Test func workingDirectoryDefaultsToTheJobDirectory() throws {
        let paths = JobPaths(dataDirectory: "/var/lib/spool", job: id)
        let plan = try LaunchPlan(job: job(), type: type(), slot: SlotSpec(id: SlotID(0)), paths: paths)
        #expect(plan.workingDirectory == "/var/lib/spool/jobs/\(id)")
        #expect(plan.workingDirectory == paths.directory)
        let custom = try LaunchPlan(job: job(), type: type(workingDirectory: "/opt/models"), slot: SlotSpec(id: SlotID(0)), paths: paths)
        #expect(custom.workingDirectory == "/opt/models")
    }

    @Test func inputTheCommandCannotUseFailsThePlan() throws {
        var job = job()
        job.input = .object([:])
        #expect(throws: CommandTemplate.Error.self) {
            try LaunchPlan(job: job, type: try type(), slot: SlotSpec(id: SlotID(0)), paths: JobPaths(dataDirectory: "/d", job: id))
        }
    }

    @Test func jobFilesLiveInTheJobsOwnDirectory() {
        let paths = JobPaths(dataDirectory: "/data", job: id)
        #expect(paths.directory == "/data/jobs/\(id)")
        #expect(paths.input == paths.directory + "/input.json")
        #expect(paths.log == paths.directory + "/log.txt")
        #expect(paths.outputs == paths.directory + "/outputs")
        #expect(paths.messages == paths.directory + "/messages")
    }

    @Test(arguments: ["..", "../x", "a/../b", "/etc/passwd", "", "a//b", "./a", "a/.", "a/", "x/..", "a\u{0}b", "."])
    func outputNamesThatCouldEscapeAreRefused(name: String) {
        #expect(JobPaths(dataDirectory: "/data", job: id).output(named: name) == nil)
    }

    @Test func overlongOutputNameIsRefused() {
        #expect(JobPaths(dataDirectory: "/data", job: id).output(named: String(repeating: "a", count: 1025)) == nil)
    }

    @Test(arguments: ["render.png", "sub/dir/file.txt", "..hidden", "a..b", ".config", "spaces are fine.txt"])
    func plainOutputNamesResolveInsideOutputs(name: String) {
        let paths = JobPaths(dataDirectory: "/data", job: id)
        #expect(paths.output(named: name) == paths.outputs + "/" + name)
    }
}
