//! `protoc-gen-rmicro`: the protoc plugin. Reads a `CodeGeneratorRequest` on standard input and
//! writes a `CodeGeneratorResponse` on standard output.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use prost::Message;

fn usage() -> String {
    let mut text = format!(
        "protoc-gen-rmicro {} (rmicro API {})\n\n\
         A protoc plugin; protoc runs it, you do not:\n\n    \
         protoc --rmicro_out=src/gen [--rmicro_opt=KEY=VALUE,...] proto/user.proto\n\n    \
         (protoc finds protoc-gen-rmicro on PATH; elsewhere, name it with\n    \
         --plugin=protoc-gen-rmicro=/path/to/protoc-gen-rmicro)\n\n\
         Parameters (--rmicro_opt, comma-separated):\n",
        protoc_gen_rmicro::VERSION,
        protoc_gen_rmicro::MAX_API
    );
    for (key, value, doc) in protoc_gen_rmicro::options::PARAMETERS {
        text.push_str(&format!("    {:<40} {doc}\n", format!("{key}={value}")));
    }
    text
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            println!(
                "protoc-gen-rmicro {} (rmicro API {})",
                protoc_gen_rmicro::VERSION,
                protoc_gen_rmicro::MAX_API
            );
            return ExitCode::SUCCESS;
        }
        Some("--supported-apis") => {
            // For `rmicro check`: every level this plugin can emit, as `MIN..=MAX`.
            println!(
                "{}..={}",
                protoc_gen_rmicro::MIN_API,
                protoc_gen_rmicro::MAX_API
            );
            return ExitCode::SUCCESS;
        }
        Some("--help" | "-h") => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "protoc-gen-rmicro: unexpected argument `{other}`; it takes no arguments but \
                 --version and --help (protoc passes parameters through --rmicro_opt)"
            );
            return ExitCode::from(2);
        }
        None => {}
    }

    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{}", usage());
        return ExitCode::from(2);
    }
    let mut request = Vec::new();
    if let Err(err) = stdin.read_to_end(&mut request) {
        eprintln!("protoc-gen-rmicro: could not read standard input: {err}");
        return ExitCode::FAILURE;
    }
    let dir = std::env::current_dir().unwrap_or_default();
    let response = match protoc_gen_rmicro::run_plugin_in(&request, &dir) {
        Ok((response, note)) => {
            if let Some(note) = note {
                eprintln!("protoc-gen-rmicro: {note}");
            }
            response
        }
        Err(err) => {
            eprintln!("protoc-gen-rmicro: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout
        .write_all(&response.encode_to_vec())
        .and_then(|()| stdout.flush())
    {
        eprintln!("protoc-gen-rmicro: could not write the response to standard output: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
