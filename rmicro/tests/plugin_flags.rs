//! A plugin flag named as one `rmicro api` has already is refused when the plugin is added, with
//! a message that says which name and whose, instead of a clap panic when the command line is
//! parsed.

use rmicro::api::plugin::{Plugin, PluginError, PluginLayer};
use rmicro::Cli;

/// A plugin with the flags `args` builds.
struct Flags {
    name: &'static str,
    args: fn() -> Vec<clap::Arg>,
}

impl Plugin for Flags {
    fn name(&self) -> &'static str {
        self.name
    }
    fn flags(&self) -> Vec<clap::Arg> {
        (self.args)()
    }
    fn layer(&self) -> Option<PluginLayer> {
        None
    }
}

fn add(cli: &mut Cli, name: &'static str, args: fn() -> Vec<clap::Arg>) -> Result<(), String> {
    cli.plugin(Flags { name, args })
        .map(|_| ())
        .map_err(|err| err.to_string())
}

#[test]
fn a_flag_named_as_a_builtin_one_is_refused() {
    let mut cli = Cli::new();
    let err = add(&mut cli, "mine", || {
        vec![clap::Arg::new("address").long("address")]
    });
    assert_eq!(
        err.unwrap_err(),
        "plugin `mine`: its flag's id `address` is taken by `rmicro api` itself; give the flag \
         another name (prefix it with the plugin's name, as `--mine-...`)"
    );
    // The long name alone, a built-in plugin's flag, an alias, `--help` and `-h`.
    let err = add(&mut cli, "mine", || {
        vec![clap::Arg::new("mine-addr").long("address")]
    });
    assert!(err
        .unwrap_err()
        .contains("`--address` is taken by `rmicro api` itself"));
    let err = add(&mut cli, "mine", || {
        vec![clap::Arg::new("mine-health").long("health-path")]
    });
    assert!(err.unwrap_err().contains("is taken by plugin `health`"));
    let err = add(&mut cli, "mine", || {
        vec![clap::Arg::new("mine-help").long("mine-help").alias("help")]
    });
    assert!(err
        .unwrap_err()
        .contains("`--help` is taken by `rmicro api` itself"));
    let err = add(&mut cli, "mine", || {
        vec![clap::Arg::new("mine-h").short('h')]
    });
    assert!(err
        .unwrap_err()
        .contains("`-h` is taken by `rmicro api` itself"));
}

#[test]
fn a_flag_named_as_another_plugins_is_refused() {
    let mut cli = Cli::new();
    add(&mut cli, "first", || {
        vec![clap::Arg::new("tenant").long("tenant").short('t')]
    })
    .unwrap();
    let err = add(&mut cli, "second", || {
        vec![clap::Arg::new("second-tenant").short('t')]
    });
    assert_eq!(
        err.unwrap_err(),
        "plugin `second`: its flag's `-t` is taken by plugin `first`; give the flag another name \
         (prefix it with the plugin's name, as `--second-...`)"
    );
    // Two flags of one plugin.
    let err = add(&mut cli, "third", || {
        vec![
            clap::Arg::new("third").long("third"),
            clap::Arg::new("third-again").long("third"),
        ]
    });
    assert!(err
        .unwrap_err()
        .contains("`--third` is taken by plugin `third`"));
    // Refused plugins are not added: the command still parses, and a plugin with free names
    // goes in.
    add(&mut cli, "fourth", || {
        vec![clap::Arg::new("fourth").long("fourth")]
    })
    .unwrap();
    let matches = cli
        .command()
        .try_get_matches_from(["rmicro", "api", "--tenant", "x", "--fourth", "y"])
        .unwrap();
    let api = matches.subcommand_matches("api").unwrap();
    assert_eq!(api.get_one::<String>("tenant").unwrap(), "x");
}

#[test]
fn a_duplicate_name_is_still_told_first() {
    let mut cli = Cli::new();
    add(&mut cli, "same", || {
        vec![clap::Arg::new("same").long("same")]
    })
    .unwrap();
    let err = cli.plugin(Flags {
        name: "same",
        args: || vec![clap::Arg::new("same").long("same")],
    });
    assert!(matches!(err, Err(PluginError::Duplicate(name)) if name == "same"));
}
