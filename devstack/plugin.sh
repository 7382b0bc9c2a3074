#!/bin/bash
# devstack plugin of nova-xen-stubdom: Nova compute driver for Xen/XAPI with
# Linux stub-domain device models.
#
#   stack install      pip-install the package (NOT editable: Nova's loader
#                      needs the nova/virt/xen_stubdom shim the wheel ships)
#   stack post-config  compute_driver + [xen_stubdom] in nova-compute's
#                      config; start the embedded XAPI simulator when no real
#                      pool is configured
#   stack extra        install the dom0 side on a real XAPI host
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
    local host=$XEN_STUBDOM_DOM0_HOST
    [[ -n "$host" ]] || return 0
    local wheel_dir=$DATA_DIR/nova-xen-stubdom/wheel
    mkdir -p "$XEN_STUBDOM_IMAGE_DIR" "$wheel_dir"
    "$NOVA_BIN_DIR/nova-xen-stubdom" build-stubdom --output "$XEN_STUBDOM_IMAGE_DIR"
    pip wheel --no-deps -w "$wheel_dir" "$XEN_STUBDOM_DIR"
    # stub domain image where [xen_stubdom] stubdom_kernel/_ramdisk point
    ssh "root@$host" mkdir -p "$XEN_STUBDOM_BOOT_DIR" /tmp/nova-xen-stubdom
    scp "$XEN_STUBDOM_IMAGE_DIR"/nova-xen-stubdom-kernel \
        "$XEN_STUBDOM_IMAGE_DIR"/nova-xen-stubdom-rootfs.cpio.gz \
        "root@$host:$XEN_STUBDOM_BOOT_DIR/"
    # the agent package, its daemon's unit and the XAPI host plugin launcher
    scp "$wheel_dir"/nova_xen_stubdom-*.whl "$XEN_STUBDOM_DIR/devstack/files/nova_xen_stubdom.xapi-plugin" \
        "$XEN_STUBDOM_DIR/devstack/files/nova-xen-stubdom-agent.service" \
        "root@$host:/tmp/nova-xen-stubdom/"
    ssh "root@$host" "python3 -m pip install --no-deps /tmp/nova-xen-stubdom/nova_xen_stubdom-*.whl && install -m 0644 /tmp/nova-xen-stubdom/nova-xen-stubdom-agent.service /etc/systemd/system/ && systemctl daemon-reload && systemctl enable --now nova-xen-stubdom-agent && install -m 0755 /tmp/nova-xen-stubdom/nova_xen_stubdom.xapi-plugin /etc/xapi.d/plugins/nova_xen_stubdom"
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
