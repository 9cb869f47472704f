//! Print the optimizer-state memory table of `docs/memory.md` (bytes per parameter element,
//! measured with the accounting API).

use std::process::ExitCode;

fn main() -> ExitCode {
    match moment_examples::memory::table() {
        Ok(t) => {
            print!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("memory-table: {e}");
            ExitCode::FAILURE
        }
    }
}
