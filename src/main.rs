//! `smart-taskd`: see `smart-taskd --help` and README.md.

fn main() -> std::process::ExitCode {
    smart_task::cli::main()
}
