//! `noether params`: parameter counts (base, hypernetwork) per family and method.

use burn::backend::Flex;
use clap::Args;
use noether::{
    nn::{ModelConfig, Modulation},
    systems::Family,
};

use super::{CliResult, outln};

/// Arguments of `noether params`.
#[derive(Args, Debug)]
pub struct ParamsArgs {
    /// Families (default: all).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<Family>,
    /// Methods.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,shift,fw,ro,mr5,svd5,svd3"
    )]
    methods: Vec<Modulation>,
}

/// Runs `noether params`: a Markdown table of protocol-v1 models' parameter counts.
pub fn run(args: ParamsArgs) -> CliResult {
    let families = if args.systems.is_empty() {
        Family::ALL.to_vec()
    } else {
        args.systems
    };
    let dev = Default::default();
    outln!("| family | method | base | hypernetwork | total |");
    outln!("|---|---|---|---|---|");
    for family in families {
        for &method in &args.methods {
            let (base, hyper) = ModelConfig::new(family, method)
                .init::<Flex>(&dev)
                .param_split();
            outln!(
                "| {family} | {method} | {base} | {hyper} | {} |",
                base + hyper
            );
        }
    }
    Ok(())
}
