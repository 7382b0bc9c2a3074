#!/bin/bash
# devstack plugin of nova-xen-stubdom: Nova compute driver for Xen/XAPI with
# Linux stub-domain device models.
#
#   stack install      pip-install the package (NOT editable: Nova's loader
#                      needs the nova/virt/xen_stubdom shim the wheel ships)
#   stack post-config  compute_driver + [xen_stubdom] in nova-compute's
#                      config; start the embedded XAPI simulator when no real
#                      pool is configured
#   stack extra        install the dom0 package (build-dom0) on a real
#                      XAPI host and restart its xenopsd
#   stack test-config  tempest.conf for the project's tempest plugin
#   unstack            stop the simulator

function xen_stubdom_using_sim {
    [[ -z "$XEN_STUBDOM_XAPI_URL" ]]
}

function xen_stubdom_xapi_url {
    if xen_stubdom_using_sim; then
        echo "http://127.0.0.1:$XEN_STUBDOM_SIM_PORT"
    else
        echo "$XEN_STUBDOM_XAPI_URL"
    fi
}

function install_xen_stubdom {
    # setup_develop would make an editable install, which does not place
    # the loader shim inside Nova's package.
    pip_install "$XEN_STUBDOM_DIR"
}

function configure_xen_stubdom {
    local conf=${NOVA_CPU_CONF:-$NOVA_CONF}
    iniset "$conf" DEFAULT compute_driver xen_stubdom.XenStubdomDriver
    iniset "$conf" xen_stubdom connection_url "$(xen_stubdom_xapi_url)"
    iniset "$conf" xen_stubdom connection_username "$XEN_STUBDOM_XAPI_USER"
    iniset "$conf" xen_stubdom connection_password "$XEN_STUBDOM_XAPI_PASSWORD"
    iniset "$conf" xen_stubdom stubdom_memory_mb "$XEN_STUBDOM_MEMORY_MB"
    iniset "$conf" xen_stubdom stubdom_vcpus "$XEN_STUBDOM_VCPUS"
    iniset "$conf" xen_stubdom allow_dom0_device_model "$XEN_STUBDOM_ALLOW_DOM0_DM"
    iniset "$conf" xen_stubdom stubdom_kernel "$XEN_STUBDOM_BOOT_DIR/nova-xen-stubdom-kernel"
    iniset "$conf" xen_stubdom stubdom_ramdisk "$XEN_STUBDOM_BOOT_DIR/nova-xen-stubdom-rootfs.cpio.gz"
    if xen_stubdom_using_sim; then
        # the simulator serves plain http on loopback; its first host
        iniset "$conf" xen_stubdom verify_tls False
        iniset "$conf" xen_stubdom host_name "${XEN_STUBDOM_HOST_NAME:-sim-host-0-0}"
    else
        iniset "$conf" xen_stubdom verify_tls "$XEN_STUBDOM_VERIFY_TLS"
        if [[ -n "$XEN_STUBDOM_HOST_NAME" ]]; then
            iniset "$conf" xen_stubdom host_name "$XEN_STUBDOM_HOST_NAME"
        fi
    fi
}

function start_xen_stubdom_sim {
    xen_stubdom_using_sim || return 0
    run_process xen-stubdom-sim "$NOVA_BIN_DIR/nova-xen-stubdom sim --hosts $XEN_STUBDOM_SIM_HOSTS --port $XEN_STUBDOM_SIM_PORT --username $XEN_STUBDOM_XAPI_USER --password $XEN_STUBDOM_XAPI_PASSWORD"
}

function install_xen_stubdom_dom0 {
    # The dom0 package of build-dom0 (doc/source/install.rst): its RPM when
    # rpmbuild was there to build one, else its tarball's install.sh.  Both
    # install the plugin, the daemon (enabled), the device-model wrapper
    # (registered in /etc/xenopsd.conf) and the stub domain image; xenopsd
    # is restarted to pick the wrapper up.
    local host=$XEN_STUBDOM_DOM0_HOST
    [[ -n "$host" ]] || return 0
    local out=$DATA_DIR/nova-xen-stubdom/dom0
    mkdir -p "$XEN_STUBDOM_IMAGE_DIR" "$out"
    rm -f "$out"/nova-xen-stubdom-dom0-*
    "$NOVA_BIN_DIR/nova-xen-stubdom" build-stubdom --output "$XEN_STUBDOM_IMAGE_DIR"
    "$NOVA_BIN_DIR/nova-xen-stubdom" build-dom0 --output "$out" \
        --stubdom-dir "$XEN_STUBDOM_IMAGE_DIR"
    local rpm tarball name
    rpm=$(find "$out" -maxdepth 1 -name 'nova-xen-stubdom-dom0-*.rpm' | head -n 1)
    tarball=$(find "$out" -maxdepth 1 -name 'nova-xen-stubdom-dom0-*.tar.gz' | head -n 1)
    ssh "root@$host" mkdir -p /tmp/nova-xen-stubdom
    # the file names are expanded here on purpose (SC2029)
    # shellcheck disable=SC2029
    if [[ -n "$rpm" ]]; then
        name=$(basename "$rpm")
        scp "$rpm" "root@$host:/tmp/nova-xen-stubdom/"
        ssh "root@$host" "rpm -Uvh --replacepkgs /tmp/nova-xen-stubdom/$name && systemctl restart xenopsd-xc"
    else
        name=$(basename "$tarball" .tar.gz)
        scp "$tarball" "root@$host:/tmp/nova-xen-stubdom/"
        ssh "root@$host" "cd /tmp/nova-xen-stubdom && tar xzf $name.tar.gz && sh $name/install.sh && systemctl restart xenopsd-xc"
    fi
    # the package puts the image under /var/lib/xcp/guest/; a site that
    # points [xen_stubdom] stubdom_kernel/_ramdisk elsewhere gets a copy
    if [[ "${XEN_STUBDOM_BOOT_DIR%/}" != /var/lib/xcp/guest ]]; then
        ssh "root@$host" mkdir -p "$XEN_STUBDOM_BOOT_DIR"
        scp "$XEN_STUBDOM_IMAGE_DIR"/nova-xen-stubdom-kernel \
            "$XEN_STUBDOM_IMAGE_DIR"/nova-xen-stubdom-rootfs.cpio.gz \
            "root@$host:$XEN_STUBDOM_BOOT_DIR/"
    fi
}

function configure_tempest_xen_stubdom {
    iniset "$TEMPEST_CONFIG" service_available xen_stubdom True
    iniset "$TEMPEST_CONFIG" xen_stubdom xapi_url "$(xen_stubdom_xapi_url)"
    iniset "$TEMPEST_CONFIG" xen_stubdom xapi_username "$XEN_STUBDOM_XAPI_USER"
    iniset "$TEMPEST_CONFIG" xen_stubdom xapi_password "$XEN_STUBDOM_XAPI_PASSWORD"
    iniset "$TEMPEST_CONFIG" xen_stubdom stubdom_memory_mb "$XEN_STUBDOM_MEMORY_MB"
    if [[ -n "$XEN_STUBDOM_TEMPEST_PCI_ALIAS" ]]; then
        iniset "$TEMPEST_CONFIG" xen_stubdom pci_alias "$XEN_STUBDOM_TEMPEST_PCI_ALIAS"
    fi
    if xen_stubdom_using_sim; then
        iniset "$TEMPEST_CONFIG" xen_stubdom host_map \
            "$(hostname -s):${XEN_STUBDOM_HOST_NAME:-sim-host-0-0}"
    elif [[ -n "$XEN_STUBDOM_HOST_NAME" ]]; then
        iniset "$TEMPEST_CONFIG" xen_stubdom host_map \
            "$(hostname -s):$XEN_STUBDOM_HOST_NAME"
    fi
}

if is_service_enabled n-cpu; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing nova-xen-stubdom"
        install_xen_stubdom
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring nova-compute for nova-xen-stubdom"
        configure_xen_stubdom
        start_xen_stubdom_sim
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        install_xen_stubdom_dom0
    elif [[ "$1" == "stack" && "$2" == "test-config" ]]; then
        if is_service_enabled tempest; then
            configure_tempest_xen_stubdom
        fi
    fi
    if [[ "$1" == "unstack" ]]; then
        stop_process xen-stubdom-sim
    fi
fi
