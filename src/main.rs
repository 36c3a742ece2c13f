//! The `canaryd` binary: a thin shell over the library's CLI.

fn main() {
    std::process::exit(canaryd::cli::run());
}
