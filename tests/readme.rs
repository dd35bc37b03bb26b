//! The README's shell block runs as written: extracted from `README.md` and run by
//! bash in an empty folder holding small generated inputs, with the built
//! `spatialzarr` first on PATH.

mod common;

use std::path::Path;
use std::process::Command;

use common::{repo, write_file};
use ndarray::{ArrayD, IxDyn};
use spatialzarr::{Dataset, DatasetOptions};

/// The first ```sh block after the heading `heading` of the README.
fn shell_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("read README.md");
    let after = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no heading {heading:?}"))
        .1;
    let block = after.split_once("```sh\n").expect("a ```sh block").1;
    block
        .split_once("\n```")
        .expect("the block's end")
        .0
        .to_owned()
}

/// The inputs the block names, small.
fn inputs(dir: &Path) {
    let labels = ArrayD::<u32>::from_shape_fn(IxDyn(&[16, 16]), |i| u32::from(i[0] >= 8) + 1);
    ndarray_npy::write_npy(dir.join("tile7.npy"), &labels).unwrap();
    let image = ArrayD::<u16>::from_shape_fn(IxDyn(&[2, 16, 16]), |i| (i[1] * 16 + i[2]) as u16);
    ndarray_npy::write_npy(dir.join("tile7_image.npy"), &image).unwrap();
    write_file(
        dir,
        "tile7.csv",
        "region,instance_id,area\ntile7_labels,1,128\ntile7_labels,2,128\n",
    );
    write_file(dir, "spots.csv", "x,y,gene\n1.5,2.5,ACTB\n3,4,GAPDH\n");
    write_file(dir, "more_spots.csv", "x,y,gene\n5,6,ACTB\n");
    write_file(dir, "circles.csv", "x,y,radius\n4,4,3\n12,12,3\n");
    write_file(
        dir,
        "cells.geojson",
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},
          "geometry":{"type":"Polygon","coordinates":[[[0,0],[8,0],[8,8],[0,8],[0,0]]]}}]}"#,
    );
}

#[test]
fn the_shell_block_of_the_readme_runs_as_written() {
    let script = shell_block("## From the shell");
    assert!(script.contains("spatialzarr init my.zarr"), "{script}");
    let dir = common::tempdir();
    inputs(dir.path());
    let bin = common::cli()
        .parent()
        .expect("the binary's folder")
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "the README's shell block failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the block did, as the library reads it.
    let ds = Dataset::open(&dir.path().join("my.zarr"), DatasetOptions::default()).unwrap();
    let list = ds.list().unwrap();
    assert!(list.images.is_empty(), "rm removed the image: {list:?}");
    assert_eq!(list.labels, vec!["tile7_labels"]);
    assert_eq!(list.points, vec!["transcripts"]);
    assert_eq!(list.shapes, vec!["nuclei", "outlines"]);
    assert_eq!(list.tables, vec!["cells"]);
    assert_eq!(ds.table_info("cells").unwrap().n_obs, 2);
    assert!(ds.check(true).unwrap().is_ok());
}
