// llmtk experiment FILE.toml: every (point, seed) of an experiment as an `llmtk train` child
// process, finished runs skipped, an interrupted one resumed, results gathered (docs/experiments.md).
#include <fmt/core.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "commands.hpp"
#include "core/error.hpp"
#include "train/experiment.hpp"

namespace llmtk::cli {

namespace fs = std::filesystem;

namespace {

volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_experiment_signal(int sig) { g_signal = sig; }

struct ExperimentArgs {
  std::string file, out;
  int jobs = 0;
  bool dry_run = false, report_only = false;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string joined_sets(const std::vector<std::string>& sets) {
  std::string s;
  for (const auto& x : sets) s += x + "\n";
  return s;
}

std::string keys_text(const train::KeyValues& keys) {
  std::string s;
  for (const auto& [k, v] : keys) s += (s.empty() ? "" : ", ") + k + "=" + v;
  return s;
}

// The last `n` lines of a log, for an error message.
std::string tail(const fs::path& p, int n) {
  std::vector<std::string> lines;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  std::string s;
  for (std::size_t i = lines.size() > std::size_t(n) ? lines.size() - std::size_t(n) : 0; i < lines.size(); ++i)
    s += "    " + lines[i] + "\n";
  return s;
}

// Whether a run directory holds a checkpoint to resume from.
bool has_checkpoint(const fs::path& run_dir) {
  return fs::exists(run_dir / "checkpoints") && !fs::is_empty(run_dir / "checkpoints");
}

// Starts `llmtk train` for one run, its output into `log`; returns the child's pid.
pid_t start_run(const train::ExperimentSpec& spec, const train::ExperimentRun& run, const fs::path& run_dir,
                const fs::path& log, int threads) {
  std::vector<std::string> args = {"llmtk", "train", spec.recipe, "--run-dir", run_dir.string()};
  if (has_checkpoint(run_dir)) {
    args.insert(args.end(), {"--resume", run_dir.string()});
  } else if (fs::exists(run_dir)) {
    args.push_back("--overwrite");  // stopped before its first checkpoint: nothing to keep
  }
  for (const auto& s : run.sets) args.insert(args.end(), {"--set", s});
  if (threads > 0) args.insert(args.end(), {"--set", "train.threads=" + std::to_string(threads)});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  LLMTK_CHECK(pid >= 0, "experiment", "cannot start a run: ", std::strerror(errno));
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) ::dup2(fd, STDOUT_FILENO), ::dup2(fd, STDERR_FILENO), ::close(fd);
    ::signal(SIGINT, SIG_DFL), ::signal(SIGTERM, SIG_DFL);
    ::execv("/proc/self/exe", argv.data());
    std::fprintf(stderr, "llmtk experiment: cannot run /proc/self/exe: %s\n", std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}

void run_experiment(const ExperimentArgs& a) {
  train::ExperimentSpec spec = train::read_experiment(a.file);
  if (a.jobs > 0) spec.jobs = a.jobs;
  const std::vector<train::ExperimentRun> plan = train::plan_experiment(spec);  // every check, before any run
  const fs::path out = a.out.empty() ? fs::path("runs") / "experiments" / spec.name : fs::path(a.out);
  const fs::path results_path = out / "results.jsonl";

  // Finished runs: their results line, with the same settings.
  std::vector<train::RunResult> results = train::read_results(results_path.string());
  std::map<std::string, const train::RunResult*> done;
  for (const auto& r : results) done[r.id] = &r;
  for (const auto& run : plan) {
    auto it = done.find(run.id);
    if (it != done.end())
      LLMTK_CHECK(it->second->sets == run.sets, a.file, "run ", run.id, " in ", results_path.string(),
                  " was made with other settings than the experiment now gives (the file changed); use another --out, "
                  "or remove ", out.string(), " to start again");
    const fs::path sets_file = out / "runs" / (run.id + ".sets");
    if (fs::exists(sets_file))
      LLMTK_CHECK(read_file(sets_file) == joined_sets(run.sets), a.file, "the interrupted run ", run.id, " in ",
                  (out / "runs").string(), " was started with other settings than the experiment now gives; use "
                  "another --out, or remove ", out.string(), " to start again");
  }
  std::vector<const train::ExperimentRun*> pending;
  for (const auto& run : plan)
    if (!done.count(run.id)) pending.push_back(&run);

  fmt::print("experiment {}: {} runs ({} points x {} seeds), {} finished, {} to run; budget {} = {:g}; results in {}\n",
             spec.name, plan.size(), plan.size() / spec.seeds.size(), spec.seeds.size(), plan.size() - pending.size(),
             pending.size(), spec.budget_kind, spec.budget, out.string());
  if (a.dry_run || a.report_only) {
    for (const auto& run : plan)
      fmt::print("  {:<8} {:<9} {:>6} steps  {:>10} params  {}\n", run.id, done.count(run.id) ? "finished" : "to run",
                 run.steps, run.params, keys_text(run.keys));
    if (a.report_only && !results.empty()) {
      fmt::print("\n{}", train::write_experiment_report(spec, plan, results, out.string()));
      fmt::print("\nreport: {}\n", (out / "report.html").string());
    }
    return;
  }
  fs::create_directories(out / "runs");
  fs::create_directories(out / "logs");
  fs::copy_file(a.file, out / "experiment.toml", fs::copy_options::overwrite_existing);

  // Ctrl-C or SIGTERM: every running run is asked to stop (each writes a checkpoint), none starts.
  struct sigaction sa {};
  sa.sa_handler = on_experiment_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: waitpid returns to look at the flag
  struct sigaction old_int {}, old_term {};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  g_signal = 0;

  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = spec.jobs > 1 ? std::max(1, cores / spec.jobs) : 0;
  std::map<pid_t, const train::ExperimentRun*> running;
  std::size_t next = 0, finished = plan.size() - pending.size();
  std::string failure;
  bool forwarded = false;
  while (next < pending.size() || !running.empty()) {
    while (!g_signal && failure.empty() && next < pending.size() && int(running.size()) < spec.jobs) {
      const auto* run = pending[next++];
      const fs::path run_dir = out / "runs" / run->id;
      { std::ofstream(out / "runs" / (run->id + ".sets")) << joined_sets(run->sets); }
      const bool resuming = has_checkpoint(run_dir);
      const pid_t pid = start_run(spec, *run, run_dir, out / "logs" / (run->id + ".log"), threads);
      running[pid] = run;
      fmt::print("[{}/{}] {} {}  {}\n", finished + running.size(), plan.size(), run->id,
                 resuming ? "resumed" : "started", keys_text(run->keys));
      std::fflush(stdout);
    }
    if ((g_signal || !failure.empty()) && !forwarded) {
      for (const auto& [pid, run] : running) ::kill(pid, SIGINT);
      forwarded = true;
    }
    if (running.empty()) break;
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      fail("experiment", "waiting for the runs failed: ", std::strerror(errno));
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;
    const train::ExperimentRun* run = it->second;
    running.erase(it);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    const fs::path log = out / "logs" / (run->id + ".log");
    if (code == 0) {
      train::RunResult r = train::collect_run(*run, (out / "runs" / run->id).string());
      { std::ofstream(results_path, std::ios::app) << train::to_json_line(r) << "\n"; }
      results.push_back(r);
      ++finished;
      fmt::print("[{}/{}] {} finished: val loss {:.4f}, {:.0f} s\n", finished, plan.size(), run->id, r.final_val_loss,
                 r.seconds);
      (void)train::write_experiment_report(spec, plan, results, out.string());  // partial results stay readable
    } else if ((code == 130 || code == 143) && (g_signal || !failure.empty())) {
      fmt::print("{} stopped with a checkpoint; it resumes when the experiment runs again\n", run->id);
    } else if (failure.empty()) {
      failure = cat("run ", run->id, " (", keys_text(run->keys), ") failed with exit status ", code, "; its log is ",
                    log.string(), ", ending:\n", tail(log, 12));
    }
    std::fflush(stdout);
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (!results.empty()) {
    const std::string md = train::write_experiment_report(spec, plan, results, out.string());
    fmt::print("\n{}\nresults: {}\ntable:   {}\nreport:  {}\n", md, results_path.string(), (out / "results.md").string(),
               (out / "report.html").string());
  }
  if (!failure.empty()) fail("experiment", failure, "the finished runs are kept; fix the cause and run the experiment again");
  if (g_signal) {
    fmt::print("interrupted: {} of {} runs finished; run the same command again to continue\n", finished, plan.size());
    throw ExitStatus{128 + int(g_signal)};
  }
}

}  // namespace

void add_experiment_commands(CLI::App& app) {
  auto a = std::make_shared<ExperimentArgs>();
  auto* ex = app.add_subcommand("experiment", "Run an experiment: a recipe, axes of keys, seeds and a budget (docs/experiments.md)");
  ex->add_option("file", a->file, "An experiment TOML file (see experiments/)")->required()->check(CLI::ExistingFile);
  ex->add_option("--out", a->out, "Results folder (default: runs/experiments/NAME)");
  ex->add_option("--jobs", a->jobs, "Runs at a time, the cores divided among them (default: the file's jobs, else 1)")
      ->check(CLI::Range(1, 64));
  ex->add_flag("--dry-run", a->dry_run, "Check everything and list the runs; run nothing");
  ex->add_flag("--report", a->report_only, "Write the report from the runs finished so far; run nothing");
  ex->callback([a] { run_experiment(*a); });
}

}  // namespace llmtk::cli
