# Defaults of the ira-agent element (see README.rst). Set them in the environment
# of disk-image-create to change them.

# The static ira binary copied into the image. Empty: the musl release build of the
# source tree this element sits in (target/x86_64-unknown-linux-musl/release/ira).
export IRA_BIN=${IRA_BIN:-}
# networkd: DHCP on every wired NIC with systemd-networkd, DNS with systemd-resolved,
# network-online once any NIC is routable. none: another element sets up the network.
export IRA_NETWORK=${IRA_NETWORK:-networkd}
# Seconds network-online waits for a routable NIC (networkd only); the agent starts
# after it either way and keeps retrying Ironic.
export IRA_NETWORK_TIMEOUT=${IRA_NETWORK_TIMEOUT:-60}
# true: a rescued node gets the user `rescue` with the password Ironic sent (the agent
# writes its hash to /etc/ipa-rescue-config/ipa-rescue-password, a path unit does the rest).
export IRA_RESCUE=${IRA_RESCUE:-true}
# Kernel modules loaded at boot: nothing else would load them before the agent needs
# them (loop and device-mapper/md for images and RAID, the IPMI device for the BMC
# address, vfat for EFI system partitions).
export IRA_MODULES=${IRA_MODULES:-loop dm_mod md_mod raid0 raid1 raid10 ipmi_devintf vfat}
# Extra command-line flags for the agent (ira --help), e.g. "--debug". Kernel
# parameters (ipa-*) need no flags: the agent reads /proc/cmdline itself.
export IRA_ARGS=${IRA_ARGS:-}
# A host path to an IPA-style config file ([DEFAULT] section), installed as
# /etc/ironic-python-agent.conf. Empty: none.
export IRA_CONFIG=${IRA_CONFIG:-}
# A host directory of executable hardware managers: each executable regular file in it
# is installed into /usr/lib/ira/hardware-managers.d, where the agent runs them as
# managers. Empty: none.
export IRA_HWM_DIR=${IRA_HWM_DIR:-}
