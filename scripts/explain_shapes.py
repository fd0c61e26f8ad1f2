"""Print the shape table of any network and overrides, without training.

    python scripts/explain_shapes.py model.kernel_size=7 model.dilation=2
    python scripts/explain_shapes.py in_channels=5 seq_len=49 model=cnn model.groups=5 model.channels=[5,32]
    python scripts/explain_shapes.py in_channels=1 seq_len=500 model=inceptiontime

With ``in_channels``/``seq_len`` given, no data is read; otherwise they come from the
data config (the synthetic cohort by default), exactly as training would see them.
"""

import hydra
from hydra.utils import execution_whitelist
from omegaconf import DictConfig, OmegaConf

from patientcnn.config import TRUSTED_TARGETS, configured
from patientcnn.data.spec import check_input_files
from patientcnn.exit_policy import report_user_errors, run_main


@hydra.main(
    config_path="../configs", config_name="explain_shapes", execution_whitelist=TRUSTED_TARGETS
)
@report_user_errors
def main(cfg: DictConfig) -> None:
    in_channels, seq_len = cfg.get("in_channels"), cfg.get("seq_len")
    static_names = []
    with execution_whitelist(TRUSTED_TARGETS):
        if in_channels is None or seq_len is None:
            check_input_files(cfg.data)
            datamodule = configured(cfg.data, "data", _convert_="all")
            datamodule.prepare_data()
            datamodule.setup()
            in_channels = in_channels or datamodule.num_channels
            seq_len = seq_len or datamodule.seq_len
            static_names = datamodule.static_features
    # the network alone, from the registry: no LightningModule, so no Lightning import;
    # imported here: --help, a config error or a missing file needs no torch
    from patientcnn.models.layers import describe_head, format_shape_table
    from patientcnn.models.registry import create_network, network_config

    name, settings = network_config(OmegaConf.to_container(cfg.model, resolve=True))
    if static_names:  # the static covariates join the pooled features, as in training
        settings["static_features"] = len(static_names)
    net = create_network(name, int(in_channels), int(seq_len), **settings)
    table = net.shape_table()
    print(f"input (N, C, L) = (N, {in_channels}, {seq_len}): N patients, C features, L time steps")
    print(format_shape_table(table))
    head = describe_head(net, static_names)
    if head:
        print(head)
    last = table[-1]
    print(
        f"network {cfg.model.net}: pooling '{cfg.model.get('pooling', 'avg')}' over the "
        f"{last['length_out']} output steps -> Linear -> 1 logit per patient; "
        f"{sum(r['params'] for r in table):,} parameters in the blocks; each output step sees "
        f"{last['receptive_field']} input steps"
    )


if __name__ == "__main__":
    run_main(main)
