#!/bin/bash
# runner-fleet lab stand-in for actions/runner; not GitHub's runner.
# Behaves as actions/runner's src/Misc/layoutbin/installdependencies.sh: as root, installs the
# native libraries .NET needs with the distribution's package manager (Debian/Ubuntu: apt-get,
# Fedora: dnf, RHEL/CentOS: yum, SUSE: zypper), same package names, fallbacks and messages.
# Debian/Ubuntu: apt-get update, libkrb5-3 zlib1g, then the first installable of each list.

if [ "$(id -u)" -ne 0 ]; then
    echo "Need to run with sudo privilege"
    exit 1
fi

print_errormessage() {
    echo "Can't install dotnet core dependencies."
    echo "You can manually install all required dependencies based on following documentation"
    echo "https://docs.microsoft.com/en-us/dotnet/core/linux-prerequisites?tabs=netcore2x"
}

give_up() {
    echo "'$1' failed with exit code '$2'"
    print_errormessage
    exit 1
}

# install_first_of PKG...: the first package of the list that installs; a name ending in `$` must
# also be known to dpkg afterwards (apt-get treats it as a pattern).
install_first_of() {
    local pkg status
    for pkg in "$@"; do
        $apt_get install -y "$pkg"
        status=$?
        if [ "$status" -eq 0 ] && [ "${pkg%\$}" != "$pkg" ]; then
            dpkg -l "${pkg%\$}" >/dev/null 2>&1
            status=$?
        fi
        [ "$status" -eq 0 ] && return 0
    done
    return "$status"
}

install_with() {
    local tool=$1
    shift
    if ! command -v "$tool"; then
        echo "Can not find '$tool'"
        print_errormessage
        exit 1
    fi
    "$tool" "$@" || give_up "$tool" "$?"
}

if [ -e /etc/os-release ]; then
    echo "--------OS Information--------"
    cat /etc/os-release
    echo "------------------------------"
    if [ -e /etc/debian_version ]; then
        echo "The current OS is Debian based"
        echo "--------Debian Version--------"
        cat /etc/debian_version
        echo "------------------------------"
        if command -v apt-get; then
            apt_get=apt-get
        elif command -v apt; then
            apt_get=apt
        else
            echo "Found neither 'apt-get' nor 'apt'"
            print_errormessage
            exit 1
        fi
        { $apt_get update && $apt_get install -y libkrb5-3 zlib1g; } || give_up "$apt_get" "$?"
        install_first_of liblttng-ust1t64 liblttng-ust1 liblttng-ust0 || give_up "$apt_get" "$?"
        install_first_of 'libssl3t64$' 'libssl3$' 'libssl1.1$' 'libssl1.0.2$' 'libssl1.0.0$' ||
            give_up "$apt_get" "$?"
        install_first_of libicu80 libicu79 libicu78 libicu77 libicu76 libicu75 libicu74 libicu73 libicu72 \
            libicu71 libicu70 libicu69 libicu68 libicu67 libicu66 libicu65 libicu63 libicu60 libicu57 \
            libicu55 libicu52 || give_up "$apt_get" "$?"
    elif [ -e /etc/redhat-release ]; then
        echo "The current OS is Fedora based"
        echo "--Fedora/RHEL/CentOS Version--"
        cat /etc/redhat-release
        echo "------------------------------"
        if [ -e /etc/fedora-release ]; then
            install_with dnf install -y lttng-ust openssl-libs krb5-libs zlib libicu
        else
            install_with yum install -y lttng-ust openssl-libs krb5-libs zlib libicu
        fi
    else
        os_like=$(grep ID_LIKE /etc/os-release | cut -f2 -d=)
        echo "$os_like"
        if echo "$os_like" | grep "suse"; then
            echo "The current OS is SUSE based"
            install_with zypper -n install lttng-ust libopenssl1_1 krb5 zlib libicu60_2
        else
            echo "Can't detect current OS type based on /etc/os-release."
            print_errormessage
            exit 1
        fi
    fi
else
    # The original also handles RHEL 6 (no os-release) on a best-effort basis; the stand-in does not.
    echo "Unknown OS version"
    print_errormessage
    exit 1
fi

echo "-----------------------------"
echo " Finish Install Dependencies"
echo "-----------------------------"
