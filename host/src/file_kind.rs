//! What kind of file a path is, in words, for the refusals of files that must be regular.

use std::{fs::FileType, os::unix::fs::FileTypeExt};

/// `file_type` in words: "a directory", "a FIFO", "a character device" and so on.
pub fn describe(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}
