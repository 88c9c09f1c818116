//! The `adt-bench` command line. All logic lives in the library (`adt_bench`); this maps its
//! result to an exit code.

fn main() -> std::process::ExitCode {
    adt_bench::main()
}
