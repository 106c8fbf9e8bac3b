package config

import "github.com/overlaybd-go/overlaybd/core"

func coreEngineConfig() core.EngineConfig { return core.EngineConfig{} }
