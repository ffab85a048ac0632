"""`python -m devstack.functions_host --settings local.settings.json`: the polling host stand-in."""

from devstack.functions_host.polling import main

if __name__ == "__main__":
    main()
