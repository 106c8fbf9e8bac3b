package tcmu

// SAM status codes returned in a completion.
const (
	StatusGood           = 0x00
	StatusCheckCondition = 0x02
	StatusBusy           = 0x08
	StatusTaskSetFull    = 0x28
)

// Sense keys used by the handler.
const (
	senseMediumError   = 0x03
	senseHardwareError = 0x04
	senseIllegalReq    = 0x05
)

// outcome is the handler's verdict on one command; it maps to a SAM status
// and fixed-format sense data exactly as libtcmu's tcmu_sts_to_scsi does.
type outcome int

const (
	ok                  outcome = iota // GOOD
	noResource                         // TASK SET FULL
	busy                               // BUSY
	readError                          // MEDIUM ERROR, UNRECOVERED READ ERROR
	writeError                         // MEDIUM ERROR, WRITE ERROR
	writeProtected                     // ILLEGAL REQUEST, INCOMPATIBLE MEDIUM (upstream's EROFS answer)
	invalidOpcode                      // ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE
	invalidCDB                         // ILLEGAL REQUEST, INVALID FIELD IN CDB
	invalidParamList                   // ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST
	invalidParamListLen                // ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR
	hardwareError                      // HARDWARE ERROR, INTERNAL TARGET FAILURE
	lbaOutOfRange                      // ILLEGAL REQUEST, LBA OUT OF RANGE
)

var outcomeNames = [...]string{"GOOD", "NO_RESOURCE", "BUSY", "RD_ERR", "WR_ERR", "WR_ERR_INCOMPAT_FRMT",
	"NOT_HANDLED", "INVALID_CDB", "INVALID_PARAM_LIST", "INVALID_PARAM_LIST_LEN", "HW_ERR", "RANGE"}

func (o outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome?"
}

// Sense builds 96 bytes of fixed-format sense data.
func Sense(key, asc, ascq byte) []byte {
	s := make([]byte, SenseSize)
	s[0] = 0x70
	s[2] = key
	s[7] = 0x0a
	s[12] = asc
	s[13] = ascq
	return s
}

// scsi maps an outcome to the SAM status and sense data of the completion.
func (o outcome) scsi() (status byte, sense []byte) {
	switch o {
	case ok:
		return StatusGood, nil
	case noResource:
		return StatusTaskSetFull, nil
	case busy:
		return StatusBusy, nil
	case readError:
		return StatusCheckCondition, Sense(senseMediumError, 0x11, 0x00)
	case writeError:
		return StatusCheckCondition, Sense(senseMediumError, 0x0c, 0x00)
	case writeProtected:
		return StatusCheckCondition, Sense(senseIllegalReq, 0x30, 0x05)
	case invalidCDB:
		return StatusCheckCondition, Sense(senseIllegalReq, 0x24, 0x00)
	case invalidParamList:
		return StatusCheckCondition, Sense(senseIllegalReq, 0x26, 0x00)
	case invalidParamListLen:
		return StatusCheckCondition, Sense(senseIllegalReq, 0x1a, 0x00)
	case hardwareError:
		return StatusCheckCondition, Sense(senseHardwareError, 0x44, 0x00)
	case lbaOutOfRange:
		return StatusCheckCondition, Sense(senseIllegalReq, 0x21, 0x00)
	default: // invalidOpcode and anything unknown
		return StatusCheckCondition, Sense(senseIllegalReq, 0x20, 0x00)
	}
}
