//! `--drive` and `--cdrom PATH`: which drives go to the IDE controller (`if=ide`,
//! `media=cdrom`, `--cdrom`) and which to virtio-blk (the rest: `if=virtio`, the default, or
//! `if=mmio`), and the firmware that boots them when no `--bios` is given (SeaBIOS from
//! Debian's package).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use janus::devices::ide::{IdeDriveSpec, Media};
use janus::virtio::blk::DriveSpec;

/// Splits `--drive` values by interface: the IDE ones (`if=ide`, or a CD: `media=cdrom`) as
/// given, the virtio-blk ones parsed.
///
/// # Errors
/// A virtio drive's options are wrong (one line naming the option).
pub fn split_drives(drives: &[String]) -> Result<(Vec<String>, Vec<DriveSpec>)> {
    let mut ide = Vec::new();
    let mut virtio = Vec::new();
    for d in drives {
        let opts: Vec<(&str, &str)> = d.split(',').filter_map(|p| p.split_once('=')).collect();
        let is = |k: &str, v: &str| opts.iter().any(|&(a, b)| a == k && b == v);
        let named_if = opts.iter().find(|&&(k, _)| k == "if").map(|&(_, v)| v);
        match named_if {
            Some("ide") => ide.push(d.clone()),
            None if is("media", "cdrom") => ide.push(d.clone()),
            Some("virtio" | "mmio" | "virtio-mmio") | None => {
                virtio.push(d.parse::<DriveSpec>().map_err(|e| anyhow::anyhow!("{e}"))?)
            }
            Some(other) => bail!("--drive {d}: if={other} is not supported (virtio, mmio or ide)"),
        }
    }
    Ok((ide, virtio))
}

/// The IDE drives of `--drive` values and `--cdrom`: disks first, in order, then the CD.
///
/// # Errors
/// A `--drive` value that is not `key=value,...` with a `file`, or asks for what janus has not
/// (an interface other than ide, a format other than raw, snapshot=on).
pub fn ide_drives(drives: &[String], cdrom: Option<&Path>) -> Result<Vec<IdeDriveSpec>> {
    let mut out = Vec::new();
    for d in drives {
        out.push(parse_drive(d)?);
    }
    if let Some(p) = cdrom {
        out.push(IdeDriveSpec {
            path: p.to_path_buf(),
            media: Media::Cdrom,
            readonly: true,
        });
    }
    Ok(out)
}

fn parse_drive(spec: &str) -> Result<IdeDriveSpec> {
    let mut file = None;
    let mut readonly = false;
    let mut media = Media::Disk;
    for part in spec.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            bail!("--drive {spec}: '{part}' is not key=value");
        };
        match (k, v) {
            ("file", p) if !p.is_empty() => file = Some(PathBuf::from(p)),
            ("if", "ide") => {}
            ("if", other) => bail!("--drive {spec}: if={other} is not an IDE drive"),
            ("media", "disk") => media = Media::Disk,
            ("media", "cdrom") => media = Media::Cdrom,
            ("readonly", "on") => readonly = true,
            ("readonly", "off") => readonly = false,
            ("snapshot", "off") | ("format", "raw") => {}
            ("cache", "none" | "writeback" | "writethrough" | "directsync" | "unsafe") => {}
            _ => bail!("--drive {spec}: {k}={v} is not supported"),
        }
    }
    let Some(path) = file else {
        bail!("--drive {spec}: no file=PATH");
    };
    Ok(IdeDriveSpec {
        path,
        media,
        readonly: readonly || media == Media::Cdrom,
    })
}

/// SeaBIOS from its Debian path, for drives given without `--bios`.
///
/// # Errors
/// Neither ROM is there: one line naming the package.
pub fn default_firmware() -> Result<PathBuf> {
    match janus::firmware::find_seabios() {
        Some(p) => Ok(p),
        None => bail!(
            "no --bios given and SeaBIOS is not installed ({} missing): install Debian's seabios \
             package or give --bios PATH",
            janus::firmware::SEABIOS_PATHS[0]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drives_parse_and_bad_ones_are_refused() {
        let d = ide_drives(
            &["file=a.img,if=ide,cache=none,format=raw".into()],
            Some(Path::new("c.iso")),
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].media, d[0].readonly), (Media::Disk, false));
        assert_eq!((d[1].media, d[1].readonly), (Media::Cdrom, true));
        let ro = ide_drives(&["file=a.img,readonly=on".into()], None).unwrap();
        assert!(ro[0].readonly);
        for bad in [
            "a.img",
            "if=ide",
            "file=a.img,if=scsi",
            "file=a.img,format=qcow2",
            "file=a.img,snapshot=on",
        ] {
            let e = ide_drives(&[bad.into()], None).unwrap_err().to_string();
            assert!(e.starts_with("--drive "), "{bad}: {e}");
        }
    }
}
