//! kiln: bake golden VM images from declarative YAML recipes.
//!
//! Layout: `recipe` (load, validate, resolve into a `plan`), `pipeline` (the stage runner and
//! the typed build context), `stages` (one module per stage), and one module per external
//! component: `libvirt`, `guest` (libguestfs), `qemu_img`, `seed` (cloud-init NoCloud).

pub mod aptsandbox;
pub mod bootstrap;
pub mod boottest;
pub mod build;
pub mod ci;
pub mod cli;
pub mod convert;
pub mod customize;
pub mod directboot;
pub mod diskread;
pub mod efiboot;
pub mod fetch;
pub mod gc;
pub mod glance;
pub mod guest;
pub mod hostfile;
pub mod hosttools;
pub mod imagediff;
pub mod imagefile;
pub mod inspect;
pub mod installer;
pub mod inventory;
pub mod libvirt;
pub mod logging;
pub mod manifest;
pub mod outdir;
pub mod owner;
pub mod parallel;
pub mod pipeline;
pub mod plan;
pub mod process;
pub mod progress;
pub mod qemu_img;
pub mod quote;
pub mod recipe;
pub mod remotecache;
pub mod report;
pub mod seed;
pub mod signing;
pub mod stagecache;
pub mod stages;
pub mod stall;
pub mod suggest;
pub mod sysprep;
pub mod templates;
pub mod tunables;
pub mod vmdk;
pub mod vocab;

/// Exit codes, as documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const BUILD_FAILED: i32 = 1;
    pub const INVALID_INPUT: i32 = 2;
    pub const INTERRUPTED: i32 = 130;
}
